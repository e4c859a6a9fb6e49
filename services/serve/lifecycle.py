"""Which adapter versions the engine serves, and how a promotion swaps them without a failure.

For each served adapter name the gateway keeps an alias (name → version). Promoting a version:

1. download it from the registry into a fresh folder and check its weights' sha256 against the
   manifest, then lint it (rank, forbidden weights, trained on this very base model);
2. load it into vLLM under an immutable name `<name>-<version>`;
3. send it a probe extraction that must come back schema-valid;
4. only then move the alias; the previous version is unloaded once its in-flight requests have
   drained (or after `TIQU_SERVE_DRAIN_TIMEOUT_S`).

Any failure before step 4 unloads the new version and leaves the old one serving. Promotions
arrive as `adapter.promoted` events; a periodic reconciliation with the registry's aliases and
with the engine's loaded adapters catches missed events and an engine that restarted.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from prometheus_client import Counter

from services.serve.extraction import Prompter
from shared import adapters
from shared.errors import InvalidInputError, NotFoundError, TiquError
from shared.models import ResolvedModel
from shared.schema import ExtractionSchema, get_schema
from shared.settings import Settings
from shared.store import Store

log = logging.getLogger(__name__)

ADAPTER_LOADS = Counter(
    "tiqu_adapter_loads_total",
    "Adapter versions the gateway tried to load into the engine, by adapter and result.",
    ["adapter", "result"],
)


class AdapterIntegrityError(InvalidInputError):
    """The stored adapter is not what its manifest says (truncated, tampered) or cannot serve."""


@dataclass
class ServedAdapter:
    name: str
    version: str
    weights_sha256: str
    folder: Path
    schema: ExtractionSchema
    prompter: Prompter
    loaded_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    in_flight: int = 0

    @property
    def lora_name(self) -> str:
        return engine_name(self.name, self.version, self.weights_sha256)

    @property
    def reference(self) -> str:
        return f"{self.name}@{self.version}"


def version_key(name: str, version: str) -> str:
    return f"{name}@{version}"


def engine_name(name: str, version: str, weights_sha256: str) -> str:
    """The name vLLM serves a version under: never reused for other weights (vLLM would serve a
    cached adapter under a reused name), even if a registry is rebuilt."""
    return f"{name}-{version}-{weights_sha256[:12]}"


Loader = Callable[[str, Path], Awaitable[None]]
Unloader = Callable[[str], Awaitable[None]]
Probe = Callable[[ServedAdapter], Awaitable[None]]


class AdapterManager:
    """The served adapter versions, their aliases and their in-flight counts."""

    def __init__(
        self,
        *,
        store: Store,
        settings: Settings,
        base: ResolvedModel,
        tokenizer: object,
        load: Loader,
        unload: Unloader,
        probe: Probe,
    ) -> None:
        self.store = store
        self.settings = settings
        self.base = base
        self.tokenizer = tokenizer
        self._load = load
        self._unload = unload
        self._probe = probe
        self.loaded: dict[str, ServedAdapter] = {}
        self.aliases: dict[str, str] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._prompters: dict[str, Prompter] = {}
        # Versions that failed to load: reconciliation does not retry them, a new event does.
        self.refused: set[str] = set()

    # -- which adapters ------------------------------------------------------------------------

    def configured_names(self) -> list[str]:
        listed = [n.strip() for n in self.settings.serve_adapters.split(",") if n.strip()]
        promoted = [n for n in adapters.names(self.store) if adapters.read_alias(self.store, n)]
        return listed or promoted

    def default_name(self) -> str | None:
        """`TIQU_ADAPTER_NAME` when served, else the first configured name."""
        listed = [n.strip() for n in self.settings.serve_adapters.split(",") if n.strip()]
        if listed:
            return listed[0]
        if self.settings.adapter_name in self.aliases:
            return self.settings.adapter_name
        return next(iter(sorted(self.aliases)), None)

    def default_ready(self) -> bool:
        name = self.default_name()
        return name is not None and name in self.aliases

    # -- requests --------------------------------------------------------------------------------

    async def acquire(self, reference: str | None) -> ServedAdapter:
        """The served version for a request (`name`, `name@version` or the default); counted as
        in flight until `release`."""
        if reference is None:
            name = self.default_name()
            if name is None or name not in self.aliases:
                raise NotFoundError("no adapter is promoted and loaded yet", param="adapter")
            version: str | None = None
        else:
            name, version = adapters.parse_ref(reference)
        if version is None:
            if name not in self.aliases:
                raise NotFoundError(f"adapter {name} is not served here", param="adapter")
            version = self.aliases[name]
        served = self.loaded.get(version_key(name, version))
        if served is None:
            # A pinned older or newer version (a batch job's, say) is loaded on demand.
            served = await self.ensure_loaded(name, version)
        served.in_flight += 1
        return served

    def release(self, served: ServedAdapter) -> None:
        served.in_flight -= 1

    # -- lifecycle ---------------------------------------------------------------------------------

    async def reconcile(self) -> None:
        """Serve the registry's promoted version of every configured name; reload what the
        engine lost (a restarted engine forgets runtime-loaded adapters)."""
        for name in await asyncio.to_thread(self.configured_names):
            alias = await asyncio.to_thread(adapters.read_alias, self.store, name)
            if alias is None or version_key(name, alias["version"]) in self.refused:
                continue
            try:
                await self.activate(name, alias["version"])
            except TiquError as exc:
                log.error(
                    "adapter not activated",
                    extra={"adapter": name, "version": alias["version"], "error": exc.message},
                )

    async def engine_lost(self, served_models: set[str]) -> None:
        """Forget versions the engine no longer serves, then load the aliases again."""
        lost = [key for key, s in self.loaded.items() if s.lora_name not in served_models]
        for key in lost:
            log.warning("engine lost adapter; reloading", extra={"adapter": key})
            self.loaded.pop(key)
        for name, version in list(self.aliases.items()):
            if version_key(name, version) in lost:
                await self.ensure_loaded(name, version)

    async def activate(self, name: str, version: str) -> ServedAdapter:
        """Load `name:version`, probe it, then point the alias at it (see the module doc)."""
        async with self._lock(f"alias:{name}"):
            served = await self.ensure_loaded(name, version)
            previous = self.aliases.get(name)
            if previous != version:
                self.aliases[name] = version
                log.info(
                    "adapter alias moved",
                    extra={"adapter": name, "version": version, "previous_version": previous},
                )
                if previous is not None:
                    asyncio.get_running_loop().create_task(self._retire(name, previous))
            return served

    async def ensure_loaded(self, name: str, version: str) -> ServedAdapter:
        key = version_key(name, version)
        if key in self.loaded:
            return self.loaded[key]
        async with self._lock(f"load:{key}"):
            if key in self.loaded:
                return self.loaded[key]
            try:
                served = await self._load_version(name, version)
            except Exception:
                ADAPTER_LOADS.labels(name, "failed").inc()
                self.refused.add(key)
                raise
            self.refused.discard(key)
            ADAPTER_LOADS.labels(name, "loaded").inc()
            self.loaded[key] = served
            return served

    async def _load_version(self, name: str, version: str) -> ServedAdapter:
        manifest = await asyncio.to_thread(adapters.load_manifest, self.store, name, version)
        if manifest is None:
            raise NotFoundError(f"adapter {name}:{version} not found", param="adapter")
        folder, schema = await asyncio.to_thread(self._fetch, name, version, manifest)
        served = ServedAdapter(
            name=name,
            version=version,
            weights_sha256=manifest["weights_sha256"],
            folder=folder,
            schema=schema,
            prompter=self._prompter(schema),
        )
        await self._load(served.lora_name, folder)
        try:
            await self._probe(served)
        except Exception:
            await self._unload(served.lora_name)
            raise
        log.info("adapter loaded", extra={"adapter": name, "version": version})
        return served

    def _fetch(self, name: str, version: str, manifest: dict) -> tuple[Path, ExtractionSchema]:
        """Download, verify and lint one version into its own folder under TIQU_ADAPTER_DIR."""
        root = Path(self.settings.adapter_dir).resolve()
        final = root / engine_name(name, version, str(manifest.get("weights_sha256")))
        scratch = root / f".{final.name}-{uuid.uuid4().hex[:8]}"
        try:
            adapters.download(self.store, name, version, scratch)
            actual = adapters.file_sha256(scratch / adapters.WEIGHTS_FILE)
            if actual != manifest.get("weights_sha256"):
                raise AdapterIntegrityError(
                    f"adapter {name}:{version} weights hash {actual[:12]} does not match its "
                    f"manifest ({str(manifest.get('weights_sha256'))[:12]}): refusing to serve it",
                    param="adapter",
                    code="hash_mismatch",
                )
            problems = adapters.lint(
                scratch,
                max_rank=self.settings.serve_max_lora_rank,
                trained_on_sha256=manifest.get("base_model", {}).get("weights_sha256", ""),
                base_sha256=self.base.weights_sha256,
            )
            if problems:
                raise AdapterIntegrityError(
                    f"adapter {name}:{version} cannot be served: " + "; ".join(problems),
                    param="adapter",
                    code="lint_failed",
                )
            schema = adapters.load_schema(self.store, name, version) or get_schema()
            shutil.rmtree(final, ignore_errors=True)
            scratch.rename(final)
            return final, schema
        finally:
            shutil.rmtree(scratch, ignore_errors=True)

    async def _retire(self, name: str, version: str) -> None:
        key = version_key(name, version)
        served = self.loaded.get(key)
        if served is None:
            return
        deadline = time.monotonic() + self.settings.serve_drain_timeout_s
        while served.in_flight > 0 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        if self.aliases.get(name) == version:
            return  # promoted back meanwhile
        self.loaded.pop(key, None)
        try:
            await self._unload(served.lora_name)
        except TiquError as exc:
            log.warning("adapter not unloaded", extra={"adapter": key, "error": exc.message})
        shutil.rmtree(served.folder, ignore_errors=True)
        log.info("adapter retired", extra={"adapter": name, "version": version})

    def _lock(self, key: str) -> asyncio.Lock:
        return self._locks.setdefault(key, asyncio.Lock())

    def _prompter(self, schema: ExtractionSchema) -> Prompter:
        if schema.version not in self._prompters:
            self._prompters[schema.version] = Prompter(self.tokenizer, schema)  # type: ignore[arg-type]
        return self._prompters[schema.version]
