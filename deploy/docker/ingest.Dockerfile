# syntax=docker/dockerfile:1
# The ingest role (`tiqu api ingest`, `tiqu worker ingest`): the shared core and the `ingest`
# extra only. Multi-stage: wheels are built in the first stage, the runtime gets no compiler,
# no pip cache and no source tree, and runs as an unprivileged user.
ARG PYTHON_IMAGE=python:3.11.7-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY shared ./shared
COPY services ./services
RUN pip wheel --wheel-dir /wheels ".[ingest]"

FROM ${PYTHON_IMAGE}
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
RUN useradd --create-home --uid 10001 tiqu \
    && install -d -o 10001 -g 10001 /var/lib/tiqu
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-index --find-links /wheels "tiqu[ingest]"
USER 10001:10001
WORKDIR /home/tiqu
ENV PYTHONUNBUFFERED=1 TIQU_LOG_JSON=true
EXPOSE 8000 9101
ENTRYPOINT ["tiqu"]
CMD ["api", "ingest", "--host", "0.0.0.0", "--port", "8000"]
