# syntax=docker/dockerfile:1
# The train role (`tiqu api train`, `tiqu worker train`, and the one-shot conversion of the
# embedded base model): the shared core and the `train` extra only. PyPI's Linux torch wheel
# carries its CUDA libraries, so the same image trains on a GPU (NVIDIA container toolkit) or on
# CPU. Multi-stage: wheels are built first, the runtime runs as an unprivileged user.
ARG PYTHON_IMAGE=python:3.11.7-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY shared ./shared
COPY services ./services
RUN pip wheel --wheel-dir /wheels ".[train]"

FROM ${PYTHON_IMAGE}
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
RUN useradd --create-home --uid 10001 tiqu \
    && install -d -o 10001 -g 10001 /var/lib/tiqu /var/lib/tiqu/models /var/lib/tiqu/train
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-index --find-links /wheels "tiqu[train]"
USER 10001:10001
WORKDIR /home/tiqu
# Matplotlib (evaluation charts) writes its cache under HOME; keep it off the image layers.
ENV PYTHONUNBUFFERED=1 TIQU_LOG_JSON=true MPLCONFIGDIR=/tmp/matplotlib
EXPOSE 8002 9103
ENTRYPOINT ["tiqu"]
CMD ["api", "train", "--host", "0.0.0.0", "--port", "8002"]
