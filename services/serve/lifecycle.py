"""Which adapter versions the engine serves, and how a promotion swaps them without a failure.

For each served adapter name the gateway keeps an alias (name → version). Promoting a version:

1. download it from the registry into a fresh folder and check the sha256 of each of its files
   (weights and `adapter_config.json`) against the manifest, then lint it (rank, forbidden
   weights, trained on this very base model);
2. load it into vLLM under an immutable name `<name>-<version>-<hash>`;
3. send it the registry's probe complaint: the answer must parse and repeat the values the
   version extracted from it when it was trained;
4. only then move the alias; the previous version is unloaded once its in-flight requests have
   drained (or after `TIQU_SERVE_DRAIN_TIMEOUT_S`).

Any failure before step 4 unloads the new version and leaves the old one serving. Promotions
arrive as `adapter.promoted` events; a periodic reconciliation with the registry's aliases and
with the engine's loaded adapters catches missed events and an engine that restarted.

A request may name a version (`name@v3`); it is served only if it is the promoted version of a
served name, was promoted before (a batch job pinned it at submission), or is pinned in
`TIQU_SERVE_ADAPTERS`. Anything else is refused before any download, lock or metric label. A
version refused for what it is (hash, lint, probe) is remembered, so requests naming it are
answered from memory until a promotion event names it again.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import time
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prometheus_client import Counter

from services.serve.extraction import Prompter
from shared import adapters
from shared.anchors import TargetForm
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


# Refused versions remembered (the oldest forgotten first): each would otherwise be downloaded
# and hashed again by every request naming it.
REFUSED_LIMIT = 256


class AdapterIntegrityError(InvalidInputError):
    """The stored adapter is not what its manifest says (truncated, tampered) or cannot serve."""


@dataclass(frozen=True)
class ServePolicy:
    """`TIQU_SERVE_ADAPTERS`: the names whose promoted version is served (none listed: every
    promoted name) and versions pinned as `name@v3`, served as well when asked for."""

    names: tuple[str, ...]
    pinned: frozenset[str]

    @classmethod
    def parse(cls, setting: str) -> ServePolicy:
        names: list[str] = []
        pinned: set[str] = set()
        for entry in filter(None, (part.strip() for part in setting.split(","))):
            name, version = adapters.parse_ref(entry)
            if version is None:
                names.append(name)
            else:
                pinned.add(version_key(name, version))
        return cls(tuple(names), frozenset(pinned))

    def pins(self, name: str) -> bool:
        return any(key.partition("@")[0] == name for key in self.pinned)


@dataclass
class ServedAdapter:
    name: str
    version: str
    adapter_sha256: str
    folder: Path
    schema: ExtractionSchema
    prompter: Prompter
    # What the version extracted right from the probe complaint when it was trained.
    probe_values: dict[str, str] = field(default_factory=dict)
    # How the version writes free-text fields (`shared.anchors`).
    target_form: TargetForm = "copy"
    loaded_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    in_flight: int = 0

    @property
    def lora_name(self) -> str:
        return engine_name(self.name, self.version, self.adapter_sha256)

    @property
    def reference(self) -> str:
        return f"{self.name}@{self.version}"


def fetch_verified(
    store: Store,
    settings: Settings,
    base: ResolvedModel,
    name: str,
    version: str,
    manifest: dict[str, Any],
) -> tuple[Path, ExtractionSchema]:
    """Download, verify and lint one version into its own folder under TIQU_ADAPTER_DIR."""
    if not manifest.get("files") or not manifest.get("adapter_sha256"):
        raise AdapterIntegrityError(
            f"adapter {name}:{version} was registered with a hash of its weights only: its "
            "adapter_config.json cannot be verified, so it is not served; register it again",
            param="adapter",
            code="integrity_unknown",
        )
    root = Path(settings.adapter_dir).resolve()
    final = root / engine_name(name, version, manifest["adapter_sha256"])
    scratch = root / f".{final.name}-{uuid.uuid4().hex[:8]}"
    try:
        adapters.download(store, name, version, scratch)
        mismatches = adapters.integrity_problems(scratch, manifest)
        if mismatches:
            raise AdapterIntegrityError(
                f"adapter {name}:{version} is not the one registered: "
                + "; ".join(mismatches)
                + ": refusing to serve it",
                param="adapter",
                code="hash_mismatch",
            )
        problems = adapters.lint(
            scratch,
            max_rank=settings.serve_max_lora_rank,
            trained_on_sha256=manifest.get("base_model", {}).get("weights_sha256", ""),
            base_sha256=base.weights_sha256,
        )
        if problems:
            raise AdapterIntegrityError(
                f"adapter {name}:{version} cannot be served: " + "; ".join(problems),
                param="adapter",
                code="lint_failed",
            )
        schema = adapters.load_schema(store, name, version) or get_schema()
        shutil.rmtree(final, ignore_errors=True)
        scratch.rename(final)
        return final, schema
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def version_key(name: str, version: str) -> str:
    return f"{name}@{version}"


def engine_name(name: str, version: str, adapter_sha256: str) -> str:
    """The name vLLM serves a version under: never reused for other adapter files (vLLM would
    serve a cached adapter under a reused name), even if a registry is rebuilt."""
    return f"{name}-{version}-{adapter_sha256[:12]}"


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
        self.policy = ServePolicy.parse(settings.serve_adapters)
        self.loaded: dict[str, ServedAdapter] = {}
        self.aliases: dict[str, str] = {}
        # Locks and refusals exist only for versions that passed `check_servable`.
        self._locks: dict[str, asyncio.Lock] = {}
        self._prompters: dict[str, Prompter] = {}
        self._promoted_before: set[str] = set()
        # Versions refused for what they are (their message and code): neither requests nor
        # reconciliation load them again; a promotion event naming one does.
        self.refused: OrderedDict[str, tuple[str, str | None]] = OrderedDict()

    # -- which adapters ------------------------------------------------------------------------

    def configured_names(self) -> list[str]:
        if self.policy.names:
            return list(self.policy.names)
        return [n for n in adapters.names(self.store) if adapters.read_alias(self.store, n)]

    def default_name(self) -> str | None:
        """The first name listed in `TIQU_SERVE_ADAPTERS`, else `TIQU_ADAPTER_NAME` when served,
        else the first served name."""
        if self.policy.names:
            return self.policy.names[0]
        if self.settings.adapter_name in self.aliases:
            return self.settings.adapter_name
        return next(iter(sorted(self.aliases)), None)

    def serves_name(self, name: str) -> bool:
        return name in self.aliases or self.policy.pins(name)

    async def check_servable(self, name: str, version: str) -> None:
        """Refuse a version this gateway does not serve (see the module doc), before anything is
        downloaded or locked for it."""
        key = version_key(name, version)
        if key in self.policy.pinned or key in self._promoted_before:
            return
        if name in self.aliases:
            if self.aliases[name] == version:
                return
            if await asyncio.to_thread(adapters.was_promoted, self.store, name, version):
                self._promoted_before.add(key)
                return
        raise NotFoundError(
            f"adapter {key} is not served here: only promoted versions of served adapters and "
            "versions pinned in TIQU_SERVE_ADAPTERS are",
            param="adapter",
            code="adapter_not_served",
        )

    def forget_refusal(self, name: str, version: str) -> None:
        self.refused.pop(version_key(name, version), None)

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
                raise NotFoundError(
                    f"adapter {name} is not served here{self._refusal_note(name)}",
                    param="adapter",
                )
            version = self.aliases[name]
        served = self.loaded.get(version_key(name, version))
        if served is None:
            # A pinned or formerly promoted version (a batch job's, say) is loaded on demand.
            await self.check_servable(name, version)
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
        self._raise_if_refused(key)
        async with self._lock(f"load:{key}"):
            if key in self.loaded:
                return self.loaded[key]
            self._raise_if_refused(key)  # refused while this request waited for the lock
            try:
                served = await self._load_version(name, version)
            except Exception as exc:
                ADAPTER_LOADS.labels(name, "failed").inc()
                # An unreachable engine or a missing manifest may mend; a tampered file not.
                if isinstance(exc, AdapterIntegrityError):
                    self._refuse(key, exc)
                raise
            ADAPTER_LOADS.labels(name, "loaded").inc()
            self.loaded[key] = served
            return served

    def _refuse(self, key: str, error: AdapterIntegrityError) -> None:
        self.refused[key] = (error.message, error.code)
        self.refused.move_to_end(key)
        while len(self.refused) > REFUSED_LIMIT:
            self.refused.popitem(last=False)

    def _refusal_note(self, name: str) -> str:
        """Why `name` is not served when its latest refused version is the reason, else ''."""
        refused = [(k, m) for k, (m, _) in self.refused.items() if k.partition("@")[0] == name]
        if not refused:
            return ""
        key, message = refused[-1]
        return f": {key} failed to load ({message})"

    def _raise_if_refused(self, key: str) -> None:
        if key in self.refused:
            message, code = self.refused[key]
            raise AdapterIntegrityError(message, param="adapter", code=code)

    async def _load_version(self, name: str, version: str) -> ServedAdapter:
        manifest = await asyncio.to_thread(adapters.load_manifest, self.store, name, version)
        if manifest is None:
            raise NotFoundError(f"adapter {name}:{version} not found", param="adapter")
        folder, schema = await asyncio.to_thread(
            fetch_verified, self.store, self.settings, self.base, name, version, manifest
        )
        served = ServedAdapter(
            name=name,
            version=version,
            adapter_sha256=manifest["adapter_sha256"],
            folder=folder,
            schema=schema,
            prompter=self._prompter(schema),
            probe_values=dict(manifest.get("probe") or {}),
            target_form=adapters.target_form(manifest),
        )
        await self._load(served.lora_name, folder)
        try:
            await self._probe(served)
        except Exception:
            await self._unload(served.lora_name)
            raise
        log.info("adapter loaded", extra={"adapter": name, "version": version})
        return served

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
