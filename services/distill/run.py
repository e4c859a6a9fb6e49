"""A distill run: label a dataset with the teacher, verify every label, split, write.

The run id is derived from the dataset id, the options and the prompt versions, so submitting the
same run twice maps to one run, and a finished run (its manifest exists) is returned as it is.

Every teacher answer is kept in a content-addressed cache in the store as soon as it arrives, and
the outputs are written only at the end, `manifest.json` last. A run that dies at any point is
simply started again: answered requests come from the cache, the rest are asked, and the outputs
hold every row exactly once.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import math
import random
import re
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from services.distill.parsing import AnswerParseError, parse_teacher_list
from services.distill.prompt import (
    AUGMENT_VERSION,
    ExtractionPrompt,
    augment_messages,
    augment_plan,
)
from services.distill.split import SPLITS, assign_splits, near_duplicate_groups, parse_split
from services.distill.teacher import (
    TeacherClient,
    TeacherConfig,
    TeacherError,
    TeacherFatalError,
)
from services.distill.verify import RejectReason, TeacherAnswer, Verdict, judge
from services.ingest.pipeline import load_manifest
from shared.cleaning import clean_texts, reject_reasons
from shared.dedup import (
    dedup_keys,
    find_exact_duplicates,
    find_near_duplicates,
    minhash_signatures,
)
from shared.errors import InvalidInputError, NotFoundError, UnavailableError
from shared.prompts import student_instruction, student_messages, student_target
from shared.schema import ExtractionSchema, get_schema
from shared.settings import Settings, get_settings
from shared.store import Layout, Store

log = logging.getLogger(__name__)

# Bump when verification or output rules change: it is part of every run id.
PIPELINE_VERSION = "1"
EXPORT_FORMATS = ("alpaca",)
SELF_CONSISTENCY_TEMPERATURE = 0.7
AUGMENT_TEMPERATURE = 1.0
AUGMENT_BATCH = 5
AUGMENT_EXAMPLES = 3
EXTRACT_MAX_TOKENS = 1024
AUGMENT_MAX_TOKENS_PER_TEXT = 600
PROGRESS_INTERVAL_S = 0.5
DATASET_ID = re.compile(r"^ds-([0-9a-f]{16})$")
RUN_ID = re.compile(r"^dr-([0-9a-f]{16})-[0-9a-f]{12}$")

T = TypeVar("T")


@dataclass(frozen=True)
class DistillOptions:
    """Everything that changes the content of a run; all of it goes into the run id."""

    samples: int = 1
    augment: int = 0
    limit: int | None = None
    export: str | None = None
    split: str = "0.8,0.1,0.1"
    seed: int = 0
    agreement_threshold: float = 0.6
    teacher_model: str = "tiqu-stub"
    temperature: float = 0.0

    def __post_init__(self) -> None:
        if self.samples < 1:
            raise InvalidInputError("samples must be at least 1", param="samples")
        if self.augment < 0:
            raise InvalidInputError("augment must not be negative", param="augment")
        if self.limit is not None and self.limit < 1:
            raise InvalidInputError("limit must be at least 1", param="limit")
        if self.export is not None and self.export not in EXPORT_FORMATS:
            raise InvalidInputError(
                f"unknown export format {self.export!r}; known: {', '.join(EXPORT_FORMATS)}",
                param="export",
            )
        parse_split(self.split)

    @classmethod
    def from_settings(
        cls,
        settings: Settings | None = None,
        *,
        samples: int = 1,
        augment: int = 0,
        limit: int | None = None,
        export: str | None = None,
    ) -> DistillOptions:
        settings = settings or get_settings()
        return cls(
            samples=samples,
            augment=augment,
            limit=limit,
            export=export,
            split=settings.distill_split,
            seed=settings.distill_seed,
            agreement_threshold=settings.distill_agreement_threshold,
            teacher_model=settings.teacher_model,
            temperature=settings.teacher_temperature,
        )

    @property
    def sample_temperature(self) -> float:
        """One sample follows the configured temperature; several need diversity to vote."""
        return SELF_CONSISTENCY_TEMPERATURE if self.samples > 1 else self.temperature

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Row:
    id: str
    text: str
    augmented: bool = False


@dataclass(frozen=True)
class RowOutcome:
    """A row, its verdict and, when rejected, the raw teacher answers behind it."""

    row: Row
    verdict: Verdict
    answers: tuple[TeacherAnswer, ...]


@dataclass
class RunProgress:
    """Live counters of a run, handed to the progress callback."""

    stage: str = "preflight"
    total: int = 0
    done: int = 0
    accepted: int = 0
    rejected: int = 0
    cached_answers: int = 0
    teacher_requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: float = 0.0
    elapsed_s: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


ProgressCallback = Callable[[RunProgress], None]


@dataclass(frozen=True)
class DistillResult:
    run_id: str
    dataset_id: str
    manifest: dict[str, Any]
    reused: bool


def _no_progress(_: RunProgress) -> None:
    return None


def run_id_for(dataset_id: str, options: DistillOptions, prompt: ExtractionPrompt) -> str:
    """`dr-<dataset hex>-<hash>`: stable for the same dataset, options and prompts.

    The dataset id is spelled out so that a run can be found from its id alone.
    """
    match = DATASET_ID.match(dataset_id)
    if match is None:
        raise NotFoundError(f"dataset {dataset_id!r} not found", param="dataset_id")
    basis = json.dumps(
        {
            "dataset": dataset_id,
            "options": options.to_dict(),
            "prompt": prompt.version,
            "augment_prompt": AUGMENT_VERSION if options.augment else None,
            "pipeline": PIPELINE_VERSION,
        },
        sort_keys=True,
    )
    return f"dr-{match.group(1)}-{hashlib.sha256(basis.encode()).hexdigest()[:12]}"


def dataset_of(run_id: str) -> str | None:
    """The dataset a run id belongs to, or None when it is not a run id."""
    match = RUN_ID.match(run_id)
    return f"ds-{match.group(1)}" if match else None


def load_run_manifest(store: Store, dataset_id: str, run_id: str) -> dict[str, Any] | None:
    key = Layout.distill_run(dataset_id, run_id, "manifest.json")
    return store.read_json(key) if store.exists(key) else None


def teacher_cache_key(model: str, prompt_version: str, params: dict[str, Any], text: str) -> str:
    """The content address of one teacher answer."""
    basis = json.dumps(
        {"model": model, "prompt": prompt_version, "params": params, "text": text},
        sort_keys=True,
        ensure_ascii=False,
    )
    return hashlib.sha256(basis.encode("utf-8")).hexdigest()


def run_distill(
    dataset_id: str,
    options: DistillOptions,
    store: Store,
    *,
    config: TeacherConfig | None = None,
    progress: ProgressCallback = _no_progress,
    max_error_ratio: float | None = None,
) -> DistillResult:
    """Run (or resume, or return the finished) distill run of `dataset_id` with `options`.

    Raises NotFoundError for an unknown dataset, TeacherFatalError when the teacher cannot be
    used (checked before any row is sent), and UnavailableError when the teacher failed on more
    than `max_error_ratio` (TIQU_DISTILL_MAX_ERROR_RATIO) of the rows: nothing is written then,
    and running it again asks the teacher again for those rows only.
    """
    config = config or TeacherConfig.from_settings()
    if max_error_ratio is None:
        max_error_ratio = get_settings().distill_max_error_ratio
    if config.model != options.teacher_model:
        raise InvalidInputError(
            f"teacher model {config.model!r} differs from the run's {options.teacher_model!r}"
        )
    schema = get_schema()
    prompt = ExtractionPrompt.for_schema(schema)
    run_id = run_id_for(dataset_id, options, prompt)
    existing = load_run_manifest(store, dataset_id, run_id)
    if existing is not None:
        log.info("distill run already finished", extra={"run_id": run_id})
        return DistillResult(run_id, dataset_id, existing, reused=True)
    dataset = load_manifest(store, dataset_id)
    if dataset is None:
        raise NotFoundError(f"dataset {dataset_id} not found", param="dataset_id")
    distiller = Distiller(
        run_id=run_id,
        dataset=dataset,
        options=options,
        store=store,
        schema=schema,
        prompt=prompt,
        config=config,
        progress=progress,
        max_error_ratio=max_error_ratio,
    )
    manifest = asyncio.run(distiller.run())
    return DistillResult(run_id, dataset_id, manifest, reused=False)


def _without_credentials(url: str) -> str:
    """A URL fit for a report: any user:password@ removed."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))


def _first_error(group: BaseExceptionGroup) -> BaseException:
    """The first real exception inside a (nested) exception group."""
    first = group.exceptions[0]
    return _first_error(first) if isinstance(first, BaseExceptionGroup) else first


async def _run_pool(count: int, worker: Callable[[], Awaitable[None]]) -> None:
    """Run `count` copies of `worker`; the first failure cancels the others and is raised."""
    try:
        async with asyncio.TaskGroup() as group:
            for _ in range(count):
                group.create_task(worker())
    except BaseExceptionGroup as errors:
        raise _first_error(errors) from None


def answer_texts(answer: TeacherAnswer, report: Counter[str]) -> list[str]:
    """The strings in one augmentation answer; a failed batch is counted by why."""
    if answer.content is None:
        report[f"teacher_error:{answer.error_kind}"] += 1
        return []
    try:
        items = parse_teacher_list(answer.content)
    except AnswerParseError:
        report["parse_error"] += 1
        return []
    texts = [item for item in items if isinstance(item, str)]
    report["not_a_string"] += len(items) - len(texts)
    return texts


def novel_texts(
    candidates: list[str], existing: list[str], rules: dict[str, Any], report: Counter[str]
) -> list[str]:
    """Candidates cleaned like ingest, valid by a dataset's rules, and no (near) duplicate.

    `rules` are the dataset's ingest settings. Duplicates are looked for among the existing texts
    and the earlier candidates alike; every dropped candidate is counted in `report` by reason.
    """
    if not candidates:
        return []
    cleaned = clean_texts(pa.array(candidates, type=pa.string()))
    reasons = reject_reasons(
        cleaned,
        min_chars=rules["min_chars"],
        max_chars=rules["max_chars"],
        min_text_ratio=rules["min_text_ratio"],
    )
    valid = pc.is_null(reasons).to_numpy(zero_copy_only=False)
    report.update(reasons.drop_null().to_pylist())
    everything = pa.concat_arrays([pa.array(existing, type=pa.string()), cleaned])
    eligible = np.concatenate([np.ones(len(existing), dtype=bool), valid])
    keys = dedup_keys(everything)
    exact_of = find_exact_duplicates(keys, eligible)
    near_of = find_near_duplicates(
        minhash_signatures(keys), eligible & (exact_of < 0), threshold=rules["near_dup_threshold"]
    )
    new = slice(len(existing), None)
    report["duplicate"] += int((exact_of[new] >= 0).sum())
    report["near_duplicate"] += int((near_of[new] >= 0).sum())
    keep = valid & (exact_of[new] < 0) & (near_of[new] < 0)
    return [text for text, ok in zip(cleaned.to_pylist(), keep, strict=True) if ok]


class TeacherCache:
    """Teacher answers in the store, by content address; slow I/O runs on a thread pool."""

    def __init__(self, store: Store, executor: ThreadPoolExecutor) -> None:
        self.store = store
        self.executor = executor

    async def _io(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    async def get(self, key: str) -> str | None:
        path = Layout.teacher_cache(key)
        try:
            # A local read, hit or miss, takes microseconds: less than the hand-off to a thread.
            if self.store.protocol == "file":
                data = self.store.read_bytes(path)
            else:
                data = await self._io(self.store.read_bytes, path)
        except FileNotFoundError:
            return None
        content = json.loads(data).get("content")
        return content if isinstance(content, str) else None

    async def put(self, key: str, content: str, *, model: str, usage: dict[str, int]) -> None:
        entry = {"content": content, "model": model, **usage, "at": time.time()}
        data = json.dumps(entry, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        # Writes stay on the pool even locally: creating folders and renaming can stall.
        await self._io(self.store.write_bytes, Layout.teacher_cache(key), data)


class Distiller:
    """One run's work, in one event loop: preflight, augment, label, write."""

    def __init__(
        self,
        *,
        run_id: str,
        dataset: dict[str, Any],
        options: DistillOptions,
        store: Store,
        schema: ExtractionSchema,
        prompt: ExtractionPrompt,
        config: TeacherConfig,
        progress: ProgressCallback,
        max_error_ratio: float,
    ) -> None:
        self.run_id = run_id
        self.dataset = dataset
        self.dataset_id: str = dataset["dataset_id"]
        self.options = options
        self.store = store
        self.schema = schema
        self.prompt = prompt
        self.config = config
        self.on_progress = progress
        self.max_error_ratio = max_error_ratio
        self.progress = RunProgress()
        self._last_report = 0.0
        self._started = time.perf_counter()
        self.teacher = TeacherClient(config)
        self.executor = ThreadPoolExecutor(
            max_workers=min(64, max(8, config.max_concurrency)), thread_name_prefix="distill-io"
        )
        self.cache = TeacherCache(store, self.executor)
        self.decoding_schema = schema.decoding_schema() if config.json_schema else None

    # -- progress ---------------------------------------------------------------------------

    def _report(self, *, force: bool = False) -> None:
        now = time.perf_counter()
        if not force and now - self._last_report < PROGRESS_INTERVAL_S:
            return
        self._last_report = now
        usage = self.teacher.usage
        p = self.progress
        p.teacher_requests = usage.requests
        p.prompt_tokens = usage.prompt_tokens
        p.completion_tokens = usage.completion_tokens
        p.cost = round(usage.cost, 6)
        p.elapsed_s = round(now - self._started, 3)
        self.on_progress(p)

    def _stage(self, stage: str, total: int) -> None:
        """Report the current stage as complete and move on to `stage`."""
        self.progress.done = self.progress.total
        self._report(force=True)
        self.progress.stage = stage
        self.progress.total = total
        self.progress.done = 0
        self._report(force=True)

    # -- the run ----------------------------------------------------------------------------

    async def run(self) -> dict[str, Any]:
        log.info("distill run started", extra={"run_id": self.run_id})
        try:
            async with self.teacher:
                self._stage("preflight", 1)
                await self.teacher.preflight()
                rows, dataset_texts = await asyncio.to_thread(self._load_rows)
                augmented, augment_report = await self._augment(dataset_texts)
                outcomes = await self._label_all(rows + augmented)
            self._check_teacher_errors(outcomes)
            self._stage("write", 1)
            manifest = await asyncio.to_thread(self._write, outcomes, augment_report)
        finally:
            self.executor.shutdown(wait=False)
        self._stage("done", 0)
        counts = manifest["counts"]
        log.info(
            "distill run finished",
            extra={"run_id": self.run_id, "rows": counts["rows"], "accepted": counts["accepted"]},
        )
        return manifest

    def _check_teacher_errors(self, outcomes: list[RowOutcome]) -> None:
        """Refuse to finish a run whose teacher failed on too many rows: their labels are
        missing, not wrong, and a run that is ready is final. Its good answers are cached."""
        failed = sum(o.verdict.reason == RejectReason.TEACHER_ERROR for o in outcomes)
        if failed > self.max_error_ratio * len(outcomes):
            raise UnavailableError(
                f"the teacher failed on {failed} of {len(outcomes)} rows, above "
                f"TIQU_DISTILL_MAX_ERROR_RATIO ({self.max_error_ratio}); submit the run again "
                "once the teacher answers: only those rows are asked again",
                code="teacher_errors",
            )

    def _load_rows(self) -> tuple[list[Row], list[str]]:
        """The rows to label (the first `limit`) and every text of the dataset."""
        table = self.store.read_parquet(Layout.dataset_clean(self.dataset_id))
        ids = table.column("id").to_pylist()
        texts = table.column("text").to_pylist()
        limit = self.options.limit or len(texts)
        rows = [Row(str(i), str(t)) for i, t in zip(ids[:limit], texts[:limit], strict=True)]
        return rows, texts

    async def _ask(
        self,
        key: str,
        messages: list[dict[str, str]],
        *,
        temperature: float,
        max_tokens: int,
        response_schema: dict[str, Any] | None = None,
    ) -> TeacherAnswer:
        """The teacher's answer from the cache, else from the teacher (then cached)."""
        content = await self.cache.get(key)
        if content is not None:
            self.progress.cached_answers += 1
            return TeacherAnswer(content)
        try:
            reply = await self.teacher.chat(
                messages,
                temperature=temperature,
                response_schema=response_schema,
                max_tokens=max_tokens,
            )
        except TeacherFatalError:
            raise
        except TeacherError as exc:
            return TeacherAnswer(None, exc.kind, exc.message)
        usage = {"prompt_tokens": reply.prompt_tokens, "completion_tokens": reply.completion_tokens}
        await self.cache.put(key, reply.content, model=self.config.model, usage=usage)
        return TeacherAnswer(reply.content)

    # -- labelling --------------------------------------------------------------------------

    async def _label(self, row: Row) -> RowOutcome:
        temperature = self.options.sample_temperature
        messages = self.prompt.messages(row.text)
        asks = []
        for sample in range(self.options.samples):
            params = {
                "temperature": temperature,
                "sample": sample,
                "max_tokens": EXTRACT_MAX_TOKENS,
                "json_schema": self.config.json_schema,
            }
            key = teacher_cache_key(self.config.model, self.prompt.version, params, row.text)
            asks.append(
                self._ask(
                    key,
                    messages,
                    temperature=temperature,
                    max_tokens=EXTRACT_MAX_TOKENS,
                    response_schema=self.decoding_schema,
                )
            )
        answers = tuple(await asyncio.gather(*asks))
        verdict = judge(answers, row.text, self.schema, self.options.agreement_threshold)
        # Raw answers are only written out for rejected rows; a large run need not hold the rest.
        return RowOutcome(row, verdict, () if verdict.accepted else answers)

    async def _label_all(self, rows: list[Row]) -> list[RowOutcome]:
        self._stage("label", len(rows))
        outcomes: list[RowOutcome | None] = [None] * len(rows)
        pending: Iterator[int] = iter(range(len(rows)))

        async def worker() -> None:
            for index in pending:
                outcome = await self._label(rows[index])
                outcomes[index] = outcome
                self.progress.done += 1
                if outcome.verdict.accepted:
                    self.progress.accepted += 1
                else:
                    self.progress.rejected += 1
                self._report()

        # Twice as many rows in progress as requests allowed in flight: rows waiting on the cache
        # or being verified never leave a teacher slot idle.
        await _run_pool(min(len(rows), 2 * self.config.max_concurrency), worker)
        self._report(force=True)
        return [outcome for outcome in outcomes if outcome is not None]

    # -- augmentation -----------------------------------------------------------------------

    async def _augment_batch(self, batch: int, dataset_texts: list[str]) -> TeacherAnswer:
        rng = random.Random(f"{self.options.seed}:{batch}")
        examples = rng.sample(dataset_texts, min(AUGMENT_EXAMPLES, len(dataset_texts)))
        plan = augment_plan(rng, AUGMENT_BATCH, self.schema.field_names)
        messages = augment_messages(examples, plan)
        params = {"temperature": AUGMENT_TEMPERATURE, "batch": batch, "seed": self.options.seed}
        key = teacher_cache_key(self.config.model, AUGMENT_VERSION, params, messages[-1]["content"])
        answer = await self._ask(
            key,
            messages,
            temperature=AUGMENT_TEMPERATURE,
            max_tokens=AUGMENT_MAX_TOKENS_PER_TEXT * AUGMENT_BATCH,
        )
        self.progress.done += 1
        self.progress.total = max(self.progress.total, self.progress.done)
        self._report()
        return answer

    async def _augment(self, dataset_texts: list[str]) -> tuple[list[Row], dict[str, Any] | None]:
        """Up to `augment` new complaints, cleaned and unlike any text of the dataset."""
        wanted = self.options.augment
        if wanted == 0 or not dataset_texts:
            return [], None
        needed = math.ceil(wanted / AUGMENT_BATCH)
        max_batches = 2 * needed + 2
        self._stage("augment", needed)
        report: Counter[str] = Counter()
        kept: list[str] = []
        batch = 0
        while len(kept) < wanted and batch < max_batches:
            missing = math.ceil((wanted - len(kept)) / AUGMENT_BATCH)
            batches = range(batch, min(max_batches, batch + missing))
            answers = await asyncio.gather(
                *(self._augment_batch(b, dataset_texts) for b in batches)
            )
            batch = batches.stop
            candidates: list[str] = []
            for answer in answers:
                candidates += answer_texts(answer, report)
            report["generated"] += len(candidates)
            kept += await asyncio.to_thread(
                novel_texts, candidates, dataset_texts + kept, self.dataset["settings"], report
            )
        kept = kept[:wanted]
        summary = {
            "requested": wanted,
            "batches": batch,
            "kept": len(kept),
            "dropped": {k: v for k, v in sorted(report.items()) if k != "generated"},
            "generated": report["generated"],
        }
        rows_out = [
            Row(f"aug-{hashlib.sha256(t.encode('utf-8')).hexdigest()[:16]}", t, augmented=True)
            for t in kept
        ]
        return rows_out, summary

    # -- output -----------------------------------------------------------------------------

    def _record(self, outcome: RowOutcome) -> dict[str, Any]:
        row, verdict = outcome.row, outcome.verdict
        assert verdict.label is not None
        target = student_target(verdict.label, self.schema)
        return {
            "messages": [
                *student_messages(row.text, self.schema),
                {"role": "assistant", "content": target},
            ],
            "id": row.id,
            "label": verdict.label,
            "agreement": verdict.agreement,
            "augmented": row.augmented,
            "prompt_version": self.prompt.version,
        }

    def _alpaca(self, outcome: RowOutcome) -> dict[str, str]:
        assert outcome.verdict.label is not None
        return {
            "instruction": student_instruction(self.schema),
            "input": outcome.row.text,
            "output": student_target(outcome.verdict.label, self.schema),
        }

    @staticmethod
    def _rejection(outcome: RowOutcome) -> dict[str, Any]:
        verdict = outcome.verdict
        return {
            "id": outcome.row.id,
            "reason": str(verdict.reason),
            "field": verdict.field,
            "detail": verdict.detail,
            "agreement": verdict.agreement or None,
            "augmented": outcome.row.augmented,
            "text": outcome.row.text,
            "answers": [
                {"content": a.content}
                if a.content is not None
                else {"error_kind": a.error_kind, "error": a.error}
                for a in outcome.answers
            ],
        }

    def _split(self, accepted: list[RowOutcome]) -> tuple[list[str], dict[str, Any]]:
        """A split per accepted row: real rows grouped and dealt out; augmented rows train."""
        real = [i for i, o in enumerate(accepted) if not o.row.augmented]
        groups = near_duplicate_groups(
            [accepted[i].row.text for i in real], self.dataset["settings"]["near_dup_threshold"]
        )
        dealt = assign_splits(
            [accepted[i].row.id for i in real],
            groups,
            parse_split(self.options.split),
            self.options.seed,
        )
        splits = ["train"] * len(accepted)
        for index, split in zip(real, dealt, strict=True):
            splits[index] = split
        sizes = np.unique(groups, return_counts=True)[1]
        stats = {
            "groups": len(sizes),
            "largest_group": int(sizes.max(initial=0)),
            "augmented_in_train": len(accepted) - len(real),
        }
        return splits, stats

    def _write_jsonl(self, filename: str, records: list[dict[str, Any]]) -> str:
        key = Layout.distill_run(self.dataset_id, self.run_id, filename)
        lines = (json.dumps(r, ensure_ascii=False, separators=(",", ":")) + "\n" for r in records)
        self.store.write_bytes(key, "".join(lines).encode("utf-8"))
        return key

    def _write(
        self, outcomes: list[RowOutcome], augment_report: dict[str, Any] | None
    ) -> dict[str, Any]:
        accepted = [o for o in outcomes if o.verdict.accepted]
        splits, split_stats = self._split(accepted)
        by_split: dict[str, list[RowOutcome]] = {name: [] for name in SPLITS}
        for outcome, split in zip(accepted, splits, strict=True):
            by_split[split].append(outcome)
        files = {
            name: self._write_jsonl(f"{name}.jsonl", [self._record(o) for o in members])
            for name, members in by_split.items()
        }
        files["rejected"] = self._write_jsonl(
            "rejected.jsonl", [self._rejection(o) for o in outcomes if not o.verdict.accepted]
        )
        if self.options.export == "alpaca":
            for name, members in by_split.items():
                files[f"{name}_alpaca"] = self._write_jsonl(
                    f"{name}.alpaca.jsonl", [self._alpaca(o) for o in members]
                )
        sizes = {name: len(members) for name, members in by_split.items()}
        manifest = self._manifest(outcomes, sizes | split_stats, files, augment_report)
        self.store.write_json(
            Layout.distill_run(self.dataset_id, self.run_id, "manifest.json"), manifest
        )
        return manifest

    def _manifest(
        self,
        outcomes: list[RowOutcome],
        splits: dict[str, int],
        files: dict[str, str],
        augment_report: dict[str, Any] | None,
    ) -> dict[str, Any]:
        reasons = Counter(str(o.verdict.reason) for o in outcomes if not o.verdict.accepted)
        accepted = len(outcomes) - sum(reasons.values())
        by_field: dict[str, Counter[str]] = {
            RejectReason.UNGROUNDED: Counter(),
            RejectReason.LOW_AGREEMENT: Counter(),
        }
        teacher_errors: Counter[str] = Counter()
        for o in outcomes:
            v = o.verdict
            if v.reason in by_field and v.field is not None:
                by_field[v.reason][v.field] += 1
            if v.reason == RejectReason.TEACHER_ERROR and v.detail is not None:
                teacher_errors[v.detail] += 1
        voted = [o.verdict.agreement for o in outcomes if o.verdict.agreement]
        names = self.schema.field_names
        elapsed = time.perf_counter() - self._started
        usage = self.teacher.usage
        return {
            "run_id": self.run_id,
            "dataset_id": self.dataset_id,
            "created_at": datetime.now(UTC).isoformat(),
            "schema_version": self.schema.version,
            "prompt_version": self.prompt.version,
            "augment_prompt_version": AUGMENT_VERSION,
            "pipeline_version": PIPELINE_VERSION,
            "settings": self.options.to_dict(),
            "teacher": {
                "model": self.config.model,
                "base_url": _without_credentials(self.config.base_url),
                "requests": usage.requests,
                "failed_requests": usage.failed,
                "retries": usage.retries,
                "cached_answers": self.progress.cached_answers,
                "prompt_tokens": usage.prompt_tokens,
                "completion_tokens": usage.completion_tokens,
                "estimated_cost": round(usage.cost, 6),
            },
            "counts": {
                "rows": len(outcomes),
                "augmented_rows": sum(o.row.augmented for o in outcomes),
                "accepted": accepted,
                "rejected": len(outcomes) - accepted,
                "rejected_by_reason": {r.value: reasons.get(r.value, 0) for r in RejectReason},
                "ungrounded_by_field": dict(by_field[RejectReason.UNGROUNDED]),
                "low_agreement_by_field": dict(by_field[RejectReason.LOW_AGREEMENT]),
                "teacher_errors_by_kind": dict(teacher_errors),
            },
            "agreement": {
                "samples": self.options.samples,
                "threshold": self.options.agreement_threshold,
                "rows_voted": len(voted),
                "unanimous_rows": sum(all(a[n] == 1.0 for n in names) for a in voted),
                "mean_by_field": {
                    n: round(sum(a[n] for a in voted) / len(voted), 4) if voted else None
                    for n in names
                },
                "min_by_field": {n: min((a[n] for a in voted), default=None) for n in names},
            },
            "augment": augment_report,
            "splits": splits,
            "files": files,
            "duration_s": round(elapsed, 3),
            "rows_per_s": round(len(outcomes) / elapsed, 2) if elapsed > 0 else None,
        }
