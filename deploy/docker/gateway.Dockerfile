# syntax=docker/dockerfile:1
# The serving role without the engine: the extraction gateway (`tiqu api serve`) and the batch
# worker (`tiqu worker batch`). The shared core, the `ingest` extra (batch jobs read the same
# exports: xlsx, GBK csv, ...) and what the gateway encodes prompts with: transformers and
# tokenizers at the `train` extra's versions (tests/deploy checks they agree) and jinja2 for the
# chat template. Neither torch nor vLLM: the model runs in the vLLM container. Multi-stage,
# unprivileged runtime.
ARG PYTHON_IMAGE=python:3.11.7-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY shared ./shared
COPY services ./services
RUN pip wheel --wheel-dir /wheels ".[ingest]" "transformers==5.19.0" "tokenizers==0.23.3" \
    "jinja2==3.1.6"

FROM ${PYTHON_IMAGE}
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
RUN useradd --create-home --uid 10001 tiqu \
    && install -d -o 10001 -g 10001 /var/lib/tiqu /var/lib/tiqu/adapters
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-index --find-links /wheels "tiqu[ingest]" "transformers==5.19.0" \
    "tokenizers==0.23.3" "jinja2==3.1.6"
USER 10001:10001
WORKDIR /home/tiqu
ENV PYTHONUNBUFFERED=1 TIQU_LOG_JSON=true
EXPOSE 8003 9104
ENTRYPOINT ["tiqu"]
CMD ["api", "serve", "--host", "0.0.0.0", "--port", "8003"]
