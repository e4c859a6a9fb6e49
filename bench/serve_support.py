"""The parts of bench/serve.py that are not the benchmark itself.

Complaint texts, the quickly trained adapters, the naive transformers + peft baseline, the
processes of the stack (vLLM engine, gateway, batch worker) and a closed-loop load generator.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import psutil
from prometheus_client.parser import text_string_to_metric_families

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from shared.cleaning import clean_text
from shared.json_scan import matching_end
from shared.models import ResolvedModel
from shared.prompts import student_target
from shared.samples import FIELDS, generate_complaints
from shared.schema import get_schema
from tests.support import ServiceProcess, free_port, start_process, wait_until

ROOT = Path(__file__).resolve().parents[1]
TIQU = str(Path(sys.executable).parent / "tiqu")

# -- complaints ----------------------------------------------------------------------------------


def complaints(
    count: int, *, max_chars: int, seed: int, exclude: frozenset[str] = frozenset()
) -> list[tuple[str, str]]:
    """`count` distinct generated complaints (cleaned as ingest cleans them) of at most
    `max_chars` characters (0: any length) and not in `exclude`, each with the JSON answer a
    student learns."""
    schema = get_schema()
    # About a third of the generator's originals have at most 160 characters.
    rows = max(count * (4 if max_chars else 2), 200)
    while True:
        labels = generate_complaints(rows, seed=seed).labels
        originals = labels[labels["kind"] == "original"]
        found: list[tuple[str, str]] = []
        seen: set[str] = set()
        for row in originals.itertuples(index=False):
            if max_chars and len(row.text) > max_chars * 1.2:
                continue  # cleaning only shortens a little; skip the cost for hopeless rows
            text = clean_text(row.text)
            if not text or text in seen or text in exclude or (max_chars and len(text) > max_chars):
                continue
            seen.add(text)
            label = {name: getattr(row, name) for name in FIELDS}
            found.append((text, student_target(label, schema)))
            if len(found) == count:
                return found
        rows *= 2


# -- adapters ------------------------------------------------------------------------------------


def train_tiny_adapters(
    base: ResolvedModel, examples: Sequence[tuple[str, str]], out: Path, names: Sequence[str]
) -> tuple[list[Path], str]:
    """One adapter per name, each taught its own share of `examples` by serve_support.train_lora."""
    from tests.serve.serve_support import train_lora

    share = len(examples) // len(names)
    folders = []
    for index, name in enumerate(names):
        part = list(examples[index * share : (index + 1) * share])
        folders.append(train_lora(base.path, out / name, part, steps=60, seed=index))
    return folders, (
        f"each trained by tests/serve/serve_support.train_lora (r=8, lr 2e-2, fp32, 60 steps of "
        f"one example) on its own {share} complaints, seeds 0-{len(names) - 1}"
    )


def train_gemma_adapters(
    base: ResolvedModel,
    examples: Sequence[tuple[str, str]],
    out: Path,
    names: Sequence[str],
    *,
    steps: int,
    learning_rate: float,
) -> tuple[list[Path], str]:
    """The first adapter trained by tiqu's LoraTrainer; the others are copies of it with the LoRA
    B matrices scaled slightly (distinct weights and engine slots, answers of the same length).

    serve_support.train_lora's learning rate (2e-2, tuned for the tiny model) wrecks Gemma:
    after 16 steps it answered with repeated junk tokens.
    """
    import torch
    from safetensors.torch import load_file, save_file

    from services.train.data import Encoded
    from services.train.request import TrainParams
    from services.train.trainer import LoraTrainer
    from shared.chat import encode_prompt, encode_text
    from shared.models import load_causal_lm, load_tokenizer, pick_dtype
    from shared.prompts import student_messages
    from shared.settings import Settings

    batch = 4
    tokenizer = load_tokenizer(base.path)
    schema = get_schema()
    encoded = []
    for text, target in examples[: steps * batch]:
        prompt = encode_prompt(tokenizer, student_messages(text, schema))
        answer = encode_text(tokenizer, target + base.eos_token)
        encoded.append(Encoded(tuple(prompt + answer), len(prompt)))
    params = TrainParams.from_settings(
        Settings(), epochs=1, batch_size=batch, learning_rate=learning_rate, patience=0
    )
    device = torch.device("cpu")
    dtype = pick_dtype(device)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as work:
        trainer = LoraTrainer(
            load_causal_lm(base.path, device, dtype),
            params,
            pad_id=tokenizer.pad_token_id,
            work_dir=Path(work),
            fingerprint="bench-serve",
            checkpoint_every=10**9,
        )
        state = trainer.fit(encoded, [])
        first = trainer.save_adapter(out / names[0], base.model_id)
    seconds = time.perf_counter() - started
    del trainer
    folders = [first]
    weights = load_file(first / "adapter_model.safetensors")
    for index, name in enumerate(names[1:], start=1):
        factor = 1.0 + (0.02 if index % 2 else -0.02) * ((index + 1) // 2)
        folder = out / name
        folder.mkdir(parents=True)
        (folder / "adapter_config.json").write_bytes((first / "adapter_config.json").read_bytes())
        scaled = {k: (v * factor if "lora_B" in k else v).contiguous() for k, v in weights.items()}
        save_file(scaled, folder / "adapter_model.safetensors")
        folders.append(folder)
    losses = [loss for _, loss in state.losses]
    return folders, (
        f"{names[0]}: tiqu's LoraTrainer, r={params.rank} alpha={params.alpha} all-linear, "
        f"{str(dtype).removeprefix('torch.')}, lr {learning_rate:g}, {state.step} steps of "
        f"{batch} complaints, loss {losses[0]:.3f} -> {losses[-1]:.3f}, {seconds:.0f} s; "
        f"{', '.join(names[1:])}: copies with lora_B scaled by 0.98/1.02/0.96"
    )


# -- the naive baseline --------------------------------------------------------------------------


def json_closed(text: str) -> bool:
    """`text` holds a whole top-level JSON object (strings and escapes respected)."""
    return matching_end(text) is not None


@dataclass
class BaselineRun:
    seconds: list[float] = field(default_factory=list)
    cpu_seconds: list[float] = field(default_factory=list)  # this process, all its threads
    new_tokens: list[int] = field(default_factory=list)
    answers: list[str] = field(default_factory=list)
    stops: Counter[str] = field(default_factory=Counter)
    load_seconds: float = 0.0


def naive_baseline(
    base: ResolvedModel,
    adapter: Path,
    prompts: Sequence[list[int]],
    max_new_tokens: Callable[[int], int],
) -> BaselineRun:
    """transformers + peft, greedy `generate()` one request at a time (one untimed warm-up).

    Generation ends at the base model's end-of-turn token, or once the answer's JSON object has
    closed (where the engine's constrained decoding ends it too), or at the token budget.
    """
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, StoppingCriteria, StoppingCriteriaList

    from shared.models import load_tokenizer, pick_dtype

    class StopWhenJsonCloses(StoppingCriteria):
        def __init__(self, prompt_length: int) -> None:
            self.prompt_length = prompt_length

        def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **_: Any) -> Any:
            text = tokenizer.decode(input_ids[0, self.prompt_length :], skip_special_tokens=True)
            return torch.tensor([json_closed(text)], device=input_ids.device)

    run = BaselineRun()
    started = time.perf_counter()
    tokenizer = load_tokenizer(base.path)
    model = AutoModelForCausalLM.from_pretrained(base.path, dtype=pick_dtype(torch.device("cpu")))
    model = PeftModel.from_pretrained(model, adapter).eval()
    run.load_seconds = time.perf_counter() - started

    def generate(ids: list[int]) -> torch.Tensor:
        with torch.inference_mode():
            output = model.generate(
                input_ids=torch.tensor([ids]),
                attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                max_new_tokens=max_new_tokens(len(ids)),
                do_sample=False,
                eos_token_id=base.eos_token_id,
                pad_token_id=tokenizer.pad_token_id,
                stopping_criteria=StoppingCriteriaList([StopWhenJsonCloses(len(ids))]),
            )
        return output[0, len(ids) :]

    generate(prompts[0])  # warm-up, not timed
    for ids in prompts:
        cpu = time.process_time()
        began = time.perf_counter()
        new = generate(ids)
        run.seconds.append(time.perf_counter() - began)
        run.cpu_seconds.append(time.process_time() - cpu)
        tokens = new.tolist()
        run.new_tokens.append(len(tokens))
        answer = tokenizer.decode(new, skip_special_tokens=True).strip()
        run.answers.append(answer)
        if tokens and tokens[-1] == base.eos_token_id:
            run.stops["end-of-turn"] += 1
        elif json_closed(answer):
            run.stops["JSON closed"] += 1
        else:
            run.stops["token budget"] += 1
    return run


# -- processes -----------------------------------------------------------------------------------


@dataclass
class Stack:
    """The engine, the gateway and the batch worker, each in its own process group."""

    work: Path
    env: dict[str, str]
    processes: list[ServiceProcess] = field(default_factory=list)
    engine_url: str = ""
    gateway_url: str = ""

    def _start(self, name: str, argv: list[str], env: dict[str, str]) -> ServiceProcess:
        logs = self.work / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        process = start_process(argv, logs / f"{name}.log", env)
        self.processes.append(process)
        return process

    def start_engine(self, timeout: float) -> ServiceProcess:
        port = free_port()
        env = {**self.env, "TIQU_ENGINE_HOST": "127.0.0.1", "TIQU_ENGINE_PORT": str(port)}
        process = self._start("engine", [TIQU, "serve", "engine"], env)
        process.url = self.engine_url = f"http://127.0.0.1:{port}"
        self.env["TIQU_ENGINE_URL"] = self.engine_url
        wait_until(lambda: answers(f"{self.engine_url}/health"), timeout, "vLLM engine", process)
        return process

    def start_gateway(self, adapters: int, timeout: float) -> ServiceProcess:
        port = free_port()
        process = self._start("gateway", [TIQU, "api", "serve", "--port", str(port)], self.env)
        process.url = self.gateway_url = f"http://127.0.0.1:{port}"
        self.env["TIQU_GATEWAY_URL"] = self.gateway_url

        def ready() -> bool:
            try:
                status = httpx.get(f"{self.gateway_url}/readyz", timeout=5).status_code
            except httpx.HTTPError:
                return False
            if status >= 500 and status != 503:  # 503: not ready yet; anything else is broken
                raise RuntimeError(f"the gateway answered {status} on /readyz")
            if status != 200:
                return False
            listed = httpx.get(f"{self.gateway_url}/v1/adapters", timeout=5).json()["adapters"]
            return len(listed) >= adapters

        wait_until(ready, timeout, f"gateway with {adapters} adapters loaded", process)
        return process

    def start_batch_worker(self, timeout: float) -> ServiceProcess:
        process = self._start("batch-worker", [TIQU, "worker", "batch"], self.env)
        wait_until(lambda: " ready." in process.log(), timeout, "batch worker", process)
        return process

    def cpu_seconds(self) -> float:
        """CPU time used so far by every process of the stack (user + system, children too)."""
        total = 0.0
        for service in self.processes:
            try:
                root = psutil.Process(service.process.pid)
                tree = [root, *root.children(recursive=True)]
            except psutil.Error:
                continue
            for process in tree:
                with contextlib.suppress(psutil.Error):
                    times = process.cpu_times()
                    total += times.user + times.system
        return total

    def stop(self) -> None:
        for process in reversed(self.processes):
            with contextlib.suppress(ProcessLookupError, OSError):
                process.stop(timeout=30)

    def log_tails(self, chars: int = 3000) -> str:
        return "\n".join(
            f"--- {p.log_path.name} (last {chars} characters) ---\n{p.log()[-chars:]}"
            for p in self.processes
        )


def answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def clean_env(**overrides: str) -> dict[str, str]:
    """This process's environment without any TIQU_ setting, plus `overrides`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIQU_")}
    return {**env, **overrides}


@dataclass(frozen=True)
class EngineCounters:
    """vLLM's counters so far: prompt and generated tokens, prompt tokens its prefix cache
    was asked for and already held (the shared instruction, when caching works), and generated
    tokens that were speculative drafts the model accepted (0 without speculative decoding)."""

    prompt: float = 0.0
    generated: float = 0.0
    cache_queries: float = 0.0
    cache_hits: float = 0.0
    draft_accepted: float = 0.0

    def __sub__(self, other: EngineCounters) -> EngineCounters:
        return EngineCounters(
            self.prompt - other.prompt,
            self.generated - other.generated,
            self.cache_queries - other.cache_queries,
            self.cache_hits - other.cache_hits,
            self.draft_accepted - other.draft_accepted,
        )

    @property
    def decode_steps(self) -> float:
        """Forward passes that generated tokens: each gives one token plus its accepted drafts."""
        return self.generated - self.draft_accepted


async def engine_tokens(client: httpx.AsyncClient) -> EngineCounters:
    """vLLM's token counters so far (see EngineCounters)."""
    text = (await client.get("/metrics")).text
    names = {
        "vllm:prompt_tokens_total": "prompt",
        "vllm:generation_tokens_total": "generated",
        "vllm:prefix_cache_queries_total": "cache_queries",
        "vllm:prefix_cache_hits_total": "cache_hits",
        "vllm:spec_decode_num_accepted_tokens_total": "draft_accepted",
    }
    totals = dict.fromkeys(names.values(), 0.0)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name in names:
                totals[names[sample.name]] += sample.value
    return EngineCounters(**totals)


# -- load ----------------------------------------------------------------------------------------


@dataclass
class Outcome:
    ok: bool
    status: str  # "200", "429", "ReadTimeout", ...
    valid_json: bool | None = None


@dataclass
class LoadRun:
    """What a run of requests gave: latencies of the answered ones, failures by status."""

    requests: int
    concurrency: int
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)
    failures: Counter[str] = field(default_factory=Counter)
    valid_json: list[bool] = field(default_factory=list)
    new_tokens: float | None = None  # generated tokens per request (engine counter)
    prompt_tokens: float | None = None  # prompt tokens per request (engine counter)
    cached_share: float | None = None  # of the prompt tokens, those from vLLM's prefix cache
    cpu_seconds: float | None = None  # CPU time the system under test spent on the run

    @property
    def cpu_per_request(self) -> float | None:
        return self.cpu_seconds / self.answered if self.cpu_seconds and self.answered else None

    @property
    def answered(self) -> int:
        return len(self.latencies)

    @property
    def throughput(self) -> float:
        return self.answered / self.seconds if self.seconds else 0.0

    def percentile(self, q: float) -> float:
        return float(np.percentile(self.latencies, q)) if self.latencies else float("nan")

    @property
    def json_share(self) -> float | None:
        return sum(self.valid_json) / len(self.valid_json) if self.valid_json else None


async def closed_loop(
    send: Callable[[int], Awaitable[Outcome]], requests: int, concurrency: int
) -> LoadRun:
    """Requests 0..requests-1 by `concurrency` clients, each sending its next as soon as its
    previous one is answered."""
    run = LoadRun(requests, concurrency)
    next_index = iter(range(requests))

    async def client() -> None:
        for index in next_index:
            began = time.perf_counter()
            try:
                outcome = await send(index)
            except Exception as exc:  # any failure is that request's, counted by its kind
                outcome = Outcome(False, type(exc).__name__)
            if outcome.ok:
                run.latencies.append(time.perf_counter() - began)
                if outcome.valid_json is not None:
                    run.valid_json.append(outcome.valid_json)
            else:
                run.failures[outcome.status] += 1

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    run.seconds = time.perf_counter() - started
    return run


def gateway_sender(
    client: httpx.AsyncClient, texts: Sequence[str], adapters: Sequence[str]
) -> Callable[[int], Awaitable[Outcome]]:
    """POST /v1/extract for text i with adapter i mod len(adapters)."""

    async def send(index: int) -> Outcome:
        body = {"text": texts[index], "adapter": adapters[index % len(adapters)]}
        response = await client.post("/v1/extract", json=body)
        if response.status_code != 200:
            return Outcome(False, error_status(response))
        return Outcome(True, "200", bool(response.json()["valid_json"]))

    return send


def direct_sender(
    engine: Any,
    prompts: Sequence[list[int]],
    lora: str,
    schema: dict[str, Any],
    max_tokens: Callable[[int], int],
    stop_token_ids: list[int],
    tokens: list[int],
) -> Callable[[int], Awaitable[Outcome]]:
    """The completion the gateway would ask vLLM for, sent straight to vLLM by the gateway's own
    EngineClient; each answer's generated token count goes into `tokens`."""

    async def send(index: int) -> Outcome:
        ids = prompts[index]
        completion = await engine.complete(
            lora,
            ids,
            schema=schema,
            max_tokens=max_tokens(len(ids)),
            stop_token_ids=stop_token_ids,
        )
        tokens.append(completion.completion_tokens)
        return Outcome(True, "200", is_json_object(completion.text))

    return send


def error_status(response: httpx.Response) -> str:
    """`503 engine_timeout`: the status and the error envelope's code."""
    try:
        code = response.json()["error"]["code"]
    except (ValueError, KeyError, TypeError):
        code = None
    return f"{response.status_code} {code}" if code else str(response.status_code)


def is_json_object(text: str) -> bool:
    try:
        return isinstance(json.loads(text), dict)
    except ValueError:
        return False
