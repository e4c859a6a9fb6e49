"""The gateway's only way to the model: vLLM's OpenAI-compatible HTTP API, over pooled httpx.

Prompts go as token ids rendered by the shared chat function (vLLM would otherwise tokenize the
text again and add a second `<bos>`); answers are constrained with `response_format` json_schema,
the structured-output interface of current vLLM (the removed `guided_*` fields are silently
ignored, which the gateway's start-up probe catches).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from shared.errors import NotFoundError, UnavailableError

# Seconds a client should wait before retrying when the engine is down or slow.
ENGINE_RETRY_AFTER_S = 2.0


class EngineRejectedError(Exception):
    """vLLM answered a request with an error status (e.g. an adapter it does not know)."""

    def __init__(self, status_code: int, message: str) -> None:
        super().__init__(f"engine answered {status_code}: {message}")
        self.status_code = status_code
        self.message = message


@dataclass(frozen=True)
class Completion:
    text: str
    finish_reason: str | None
    prompt_tokens: int
    completion_tokens: int
    seconds: float


class EngineClient:
    """Async client of one vLLM server (a Service in front of several replicas works too)."""

    def __init__(
        self, base_url: str, *, timeout_s: float, max_connections: int, api_key: str = ""
    ) -> None:
        self._http = httpx.AsyncClient(
            base_url=base_url.rstrip("/"),
            headers={"Authorization": f"Bearer {api_key}"} if api_key else None,
            timeout=httpx.Timeout(timeout_s, connect=min(timeout_s, 2.0)),
            limits=httpx.Limits(
                max_connections=max_connections, max_keepalive_connections=max_connections
            ),
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    async def complete(
        self,
        model: str,
        prompt_ids: list[int],
        *,
        schema: dict[str, Any],
        max_tokens: int,
        stop_token_ids: list[int],
    ) -> Completion:
        """Greedy completion of `prompt_ids` by `model`, constrained to JSON matching `schema`."""
        body = {
            "model": model,
            "prompt": prompt_ids,
            "max_tokens": max_tokens,
            "temperature": 0.0,
            "stop_token_ids": stop_token_ids,
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "extraction", "schema": schema, "strict": True},
            },
        }
        started = time.perf_counter()
        answer = await self._request("POST", "/v1/completions", json=body)
        choice = answer["choices"][0]
        usage = answer.get("usage") or {}
        return Completion(
            text=choice.get("text") or "",
            finish_reason=choice.get("finish_reason"),
            prompt_tokens=int(usage.get("prompt_tokens") or len(prompt_ids)),
            completion_tokens=int(usage.get("completion_tokens") or 0),
            seconds=time.perf_counter() - started,
        )

    async def load_adapter(self, lora_name: str, path: Path) -> None:
        """Load the peft folder `path` as `lora_name` (already loaded, or served merged into the
        engine's weights: nothing to do)."""
        if lora_name in await self.served_models():
            return
        try:
            await self._request(
                "POST",
                "/v1/load_lora_adapter",
                json={"lora_name": lora_name, "lora_path": str(path)},
            )
        except EngineRejectedError as exc:
            if exc.status_code == 400 and "already been loaded" in exc.message:
                return
            if exc.status_code == 404 and '"Not Found"' in exc.message:
                # No such route: the engine was started on one merged adapter, without LoRA.
                raise NotFoundError(
                    f"adapter version {lora_name} is not served: the engine serves one adapter "
                    "merged into its weights and loads none at run time; restart it with "
                    "TIQU_ENGINE_MERGED_ADAPTER naming this version",
                    param="adapter",
                    code="adapter_not_served",
                ) from exc
            raise

    async def unload_adapter(self, lora_name: str) -> None:
        try:
            await self._request("POST", "/v1/unload_lora_adapter", json={"lora_name": lora_name})
        except EngineRejectedError as exc:
            if exc.status_code not in (400, 404):  # not loaded (any more): the goal is reached
                raise

    async def served_models(self) -> set[str]:
        """Names the engine serves now: the base model and every loaded adapter."""
        answer = await self._request("GET", "/v1/models")
        return {model["id"] for model in answer.get("data", [])}

    async def healthy(self) -> bool:
        try:
            response = await self._http.get("/health", timeout=2.0)
        except httpx.HTTPError:
            return False
        return response.status_code == 200

    async def waiting_requests(self) -> float:
        """Requests queued in the engine, not yet running (vLLM's `num_requests_waiting`)."""
        try:
            response = await self._http.get("/metrics", timeout=2.0)
            response.raise_for_status()
        except httpx.HTTPError as exc:
            raise UnavailableError(
                "the inference engine is unreachable", retry_after=ENGINE_RETRY_AFTER_S
            ) from exc
        waiting = 0.0
        for family in text_string_to_metric_families(response.text):
            if family.name == "vllm:num_requests_waiting":
                waiting += sum(sample.value for sample in family.samples)
        return waiting

    async def _request(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        try:
            response = await self._http.request(method, path, **kwargs)
        except httpx.TimeoutException as exc:
            raise UnavailableError(
                "the inference engine did not answer in time",
                code="engine_timeout",
                retry_after=ENGINE_RETRY_AFTER_S,
            ) from exc
        except httpx.HTTPError as exc:
            raise UnavailableError(
                "the inference engine is unreachable",
                code="engine_unavailable",
                retry_after=ENGINE_RETRY_AFTER_S,
            ) from exc
        if response.status_code >= 500:
            raise UnavailableError(
                f"the inference engine failed ({response.status_code})",
                code="engine_error",
                retry_after=ENGINE_RETRY_AFTER_S,
            )
        if response.status_code >= 400:
            raise EngineRejectedError(response.status_code, _error_message(response))
        if not response.content:
            return {}
        try:
            return response.json()
        except ValueError:
            return {"text": response.text}


def _error_message(response: httpx.Response) -> str:
    try:
        return str(response.json()["error"]["message"])
    except (ValueError, KeyError, TypeError):
        return response.text[:500]


def is_unknown_model(exc: EngineRejectedError) -> bool:
    """The engine does not serve the requested model or adapter (e.g. it restarted)."""
    return exc.status_code == 404 or "does not exist" in exc.message
