"""One adapter merged into the base weights, for an engine that serves that adapter alone.

On CPU, vLLM's LoRA path costs more than the model itself: `bench/serve.py` measured 271
generated tokens/s for the base model against 71 with one rank-16 adapter on the same engine.
An engine started with `TIQU_ENGINE_MERGED_ADAPTER` serves one version with its LoRA folded into
the weights (W + s·BA, computed in float32, saved in the base's dtype), so every token costs
what a base-model token costs.

The engine serves the merged model under the same immutable name a runtime-loaded version gets
(`<name>-<version>-<hash>`, beside the base name the gateway's start-up probes use), so the
gateway's lifecycle is unchanged: it finds the name already served instead of loading it, then
probes it and moves the alias as for any version. Such an engine loads no adapter at run time;
serving another version means restarting it with that version.

The adapter is downloaded, hash-checked and linted exactly as the gateway does before a load,
and the merged folder is cached under `TIQU_MODEL_CACHE/merged/<engine name>`, so a restart
merges nothing again.
"""

from __future__ import annotations

import json
import logging
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

from services.serve.lifecycle import engine_name, fetch_verified
from shared import adapters
from shared.models import ResolvedModel
from shared.settings import Settings
from shared.store import Store

log = logging.getLogger(__name__)

# Written last into a merged folder: a folder without it is an interrupted merge.
COMPLETE_MARK = "tiqu-merged.json"
# What the merge writes itself; every other file of the base folder (tokenizer, chat template,
# generation config) is copied as it is.
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".gguf")


@dataclass(frozen=True)
class MergedModel:
    path: Path
    # The name the gateway asks the engine for: the version's immutable engine name.
    served_name: str
    reference: str


def merged_model(
    settings: Settings, store: Store, base: ResolvedModel, reference: str
) -> MergedModel:
    """`reference` (`name` for its promoted version, or `name@v3`) merged into `base`, merging
    it first unless the cache holds it."""
    manifest = adapters.resolve(store, reference)
    name, version = str(manifest["name"]), str(manifest["version"])
    served_name = engine_name(name, version, manifest["adapter_sha256"])
    final = Path(settings.model_cache).resolve() / "merged" / served_name
    merged = MergedModel(final, served_name, f"{name}@{version}")
    if (final / COMPLETE_MARK).is_file():
        return merged
    folder, _ = fetch_verified(store, settings, base, name, version, manifest)
    scratch = final.with_name(f".{final.name}-{uuid.uuid4().hex[:8]}")
    try:
        merge_lora(base.path, folder, scratch)
        mark = {
            "adapter": merged.reference,
            "adapter_sha256": manifest["adapter_sha256"],
            "base_weights_sha256": base.weights_sha256,
        }
        (scratch / COMPLETE_MARK).write_text(json.dumps(mark) + "\n", encoding="utf-8")
        shutil.rmtree(final, ignore_errors=True)
        scratch.rename(final)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        shutil.rmtree(folder, ignore_errors=True)
    log.info("adapter merged into the base weights", extra={"adapter": merged.reference})
    return merged


def merge_lora(base_path: Path, adapter_folder: Path, out: Path) -> None:
    """Write the model of `base_path` with the LoRA of `adapter_folder` folded in to `out`."""
    import torch
    from peft import PeftModel
    from transformers import AutoConfig, AutoModelForCausalLM

    saved_dtype = AutoConfig.from_pretrained(base_path).dtype or torch.float32
    if isinstance(saved_dtype, str):
        saved_dtype = getattr(torch, saved_dtype)
    # Folded in float32: W + s·BA rounded once, to the base's own dtype, not at every step.
    model = AutoModelForCausalLM.from_pretrained(base_path, dtype=torch.float32)
    with_lora = PeftModel.from_pretrained(model, adapter_folder)
    merged = with_lora.merge_and_unload()
    merged.to(saved_dtype).save_pretrained(out)
    for source in base_path.iterdir():
        copied = source.is_file() and not source.name.endswith(_WEIGHT_SUFFIXES)
        if copied and not (out / source.name).exists():
            shutil.copy2(source, out / source.name)
