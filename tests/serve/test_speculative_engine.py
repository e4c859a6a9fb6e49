"""n-gram speculative decoding (TIQU_ENGINE_NGRAM_DRAFT_TOKENS) through a real vLLM engine and
the gateway: the engine drafts from the complaint and accepts drafts, the gateway's format probe
still passes, and every answer is the one plain greedy decoding gives."""

from __future__ import annotations

from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.engine_fixtures import start_engine
from tests.serve.test_gateway import extract
from tests.serve.test_merged_engine import runtime_lora_answers


def accepted_drafts(engine_url: str, headers: dict[str, str]) -> float:
    text = httpx.get(f"{engine_url}/metrics", headers=headers, timeout=10).text
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "vllm:spec_decode_num_accepted_tokens_total"
    )


def test_ngram_drafting_keeps_every_answer_and_accepts_drafts(
    register, loras, engine, start_gateway, tmp_path: Path
) -> None:
    register("extractor", loras.labels)
    texts, expected = runtime_lora_answers(start_gateway)

    drafting = start_engine(
        tmp_path / "ngram-engine",
        engine.base_model,
        TIQU_MODEL_CACHE=str(engine.model_cache),
        TIQU_ENGINE_NGRAM_DRAFT_TOKENS="4",
        TIQU_ENGINE_NGRAM_MAX_BATCH="4",
    )
    try:
        assert "SpeculativeConfig(method='ngram'" in drafting.process.log()
        gateway = start_gateway(TIQU_ENGINE_URL=drafting.url)  # ready: formats still enforced
        answers = [extract(gateway.url, text).json() for text in texts]
        assert [a["fields"] for a in answers] == [e["fields"] for e in expected]
        assert [a["usage"] for a in answers] == [e["usage"] for e in expected]
        assert accepted_drafts(drafting.url, engine.headers) > 0
    finally:
        drafting.process.stop()
