"""Any OpenAI-compatible endpoint (vLLM, Ollama, llama.cpp's server, a frontier API) as a generator.

Every call is cached on disk, one JSON file per call keyed by what was asked (url, model, kind,
payload), so a rerun never pays twice and works with the server gone. Token counts come from the
response's `usage`; cost from the spec's per-million prices. Transient failures (connection errors,
timeouts, 408/429/5xx, malformed bodies) are retried with capped exponential backoff and jitter,
honouring `Retry-After`; after the last try an `EndpointError` names the endpoint and what went wrong.
Failed calls are never cached.
"""

from __future__ import annotations

import email.utils
import hashlib
import json
import os
import random
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Literal, Sequence, TypeVar

import httpx
import numpy as np
from harness.config.endpoint import EndpointSpec
from harness.errors import HarnessError
from harness.results import write_json

Kind = Literal["chat", "completions"]
T = TypeVar("T")

# Bump when the cached record's shape changes: old files then read as misses, never as wrong data.
CACHE_VERSION = 1
RETRY_STATUS = frozenset({408, 429, 500, 502, 503, 504, 520, 521, 522, 523, 524, 529})


@dataclass
class Completion:
    """One generated text. `latency_s` is the wall time of the HTTP call that produced it (a cache hit
    keeps the original). `cost_usd` is what those tokens cost at the spec's prices, cached or not, so
    cost per call does not depend on the cache; `cached=True` means nothing was paid this time."""

    text: str
    input_tokens: int
    output_tokens: int
    latency_s: float
    cost_usd: float
    cached: bool = False
    created_at: str = ""  # when the call was made (UTC, ISO 8601); a cache hit keeps the original time


class EndpointError(HarnessError):
    """An endpoint call that failed for good: after its retries, or at once for a non-transient error."""

    def __init__(self, message: str, *, url: str, model: str, tries: int, status: int | None = None) -> None:
        self.url, self.model, self.tries, self.status = url, model, tries, status
        super().__init__(message, where=url)


class _Transient(Exception):
    """A failure worth retrying; `retry_after` is the server's requested wait, if it gave one."""

    def __init__(self, reason: str, status: int | None = None, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.status, self.retry_after = status, retry_after


class _Fatal(Exception):
    def __init__(self, reason: str, status: int | None = None) -> None:
        super().__init__(reason)
        self.status = status


def _retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header: delta-seconds or an HTTP date."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, timezone.utc).isoformat(timespec="seconds")


def _snippet(text: str, limit: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit] + "..."


class Endpoint:
    """Calls one model on one OpenAI-compatible server, through a disk cache when `cache_dir` is set."""

    def __init__(self, spec: EndpointSpec, cache_dir: Path | None = None) -> None:
        self.spec = spec
        self.base_url = spec.url.rstrip("/")
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self._client = httpx.Client(timeout=spec.timeout_s)

    # -- public calls -------------------------------------------------------------------------------

    def chat(self, messages: list[dict[str, str]], extra: dict[str, Any] | None = None) -> Completion:
        """POST /chat/completions: the server applies its own chat template to `messages`. `extra` adds
        request fields (e.g. `seed`), which become part of the cache key."""
        return self._call("chat", {"messages": [dict(m) for m in messages], **(extra or {})})

    def complete(self, prompt_text: str) -> Completion:
        """POST /completions with an already-rendered prompt (see `harness.evaluation.prompting.render_prompt`), so a
        server gets exactly the text every other runner gets."""
        return self._call("completions", {"prompt": prompt_text})

    def cost(self, input_tokens: int, output_tokens: int) -> float:
        return (input_tokens * self.spec.price_input_per_m + output_tokens * self.spec.price_output_per_m) / 1e6

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> "Endpoint":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- cache --------------------------------------------------------------------------------------

    def cache_key(self, kind: Kind, payload: dict[str, Any]) -> str:
        ident = {"url": self.base_url, "model": self.spec.model, "kind": kind, "payload": payload}
        return hashlib.sha256(json.dumps(ident, sort_keys=True, ensure_ascii=False).encode()).hexdigest()

    def _cache_path(self, key: str) -> Path | None:
        return self.cache_dir / key[:2] / f"{key}.json" if self.cache_dir is not None else None

    def _cache_read(self, path: Path | None) -> Completion | None:
        if path is None or not path.exists():
            return None
        try:
            rec = json.loads(path.read_text())
            if rec.get("version") != CACHE_VERSION:
                return None
            # Cost is recomputed from the current prices: the tokens are the fact, prices can be corrected.
            return Completion(rec["text"], int(rec["input_tokens"]), int(rec["output_tokens"]),
                              float(rec["latency_s"]), self.cost(rec["input_tokens"], rec["output_tokens"]),
                              cached=True, created_at=rec.get("created_at") or _iso(path.stat().st_mtime))
        except (OSError, ValueError, KeyError, TypeError):
            return None  # unreadable record: call again and overwrite it

    # -- HTTP ---------------------------------------------------------------------------------------

    def _call(self, kind: Kind, body: dict[str, Any]) -> Completion:
        payload: dict[str, Any] = {"model": self.spec.model, **body, "temperature": self.spec.temperature,
                                   "max_tokens": self.spec.max_tokens}
        if self.spec.stop:
            payload["stop"] = list(self.spec.stop)
        key = self.cache_key(kind, payload)
        path = self._cache_path(key)
        hit = self._cache_read(path)
        if hit is not None:
            return hit
        text, usage, latency, response = self._post_with_retries(kind, payload)
        done = Completion(text, usage[0], usage[1], latency, self.cost(*usage), created_at=_iso(time.time()))
        if path is not None:
            write_json(path, {"version": CACHE_VERSION, "created_at": done.created_at, "url": self.base_url,
                              "model": self.spec.model,
                              "kind": kind, "request": payload, "text": text, "input_tokens": usage[0],
                              "output_tokens": usage[1], "latency_s": latency, "response": response})
        return done

    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json"}
        env = self.spec.api_key_env
        if env:
            key = os.environ.get(env)
            if not key:
                raise EndpointError(f"the API key variable {env} (api_key_env) is not set in the environment",
                                    url=self.base_url, model=self.spec.model, tries=0)
            headers["Authorization"] = f"Bearer {key}"
        return headers

    def _post_with_retries(self, kind: Kind, payload: dict[str, Any]) -> tuple[str, tuple[int, int], float, Any]:
        headers = self._headers()
        url = f"{self.base_url}/{'chat/completions' if kind == 'chat' else 'completions'}"
        tries = self.spec.max_retries + 1
        last: _Transient | None = None
        for attempt in range(tries):
            if attempt:
                time.sleep(self._delay(attempt - 1, last.retry_after if last else None))
            try:
                return self._post_once(url, kind, payload, headers)
            except _Transient as e:
                last = e
            except _Fatal as e:
                raise EndpointError(f"{kind} call to model {self.spec.model} failed: {e} (not retried)",
                                    url=url, model=self.spec.model, tries=attempt + 1, status=e.status) from None
        assert last is not None
        raise EndpointError(
            f"{kind} call to model {self.spec.model} failed after {tries} tries: {last}",
            url=url, model=self.spec.model, tries=tries, status=last.status) from None

    def _delay(self, retry: int, retry_after: float | None) -> float:
        cap = self.spec.backoff_max_s
        if retry_after is not None:
            return min(cap, retry_after)
        # Jitter only lengthens the wait, so concurrent clients spread out without retrying early.
        return min(cap, self.spec.backoff_base_s * 2 ** retry * (1 + 0.25 * random.random()))

    def _post_once(self, url: str, kind: Kind, payload: dict[str, Any],
                   headers: dict[str, str]) -> tuple[str, tuple[int, int], float, Any]:
        t0 = time.perf_counter()
        try:
            r = self._client.post(url, json=payload, headers=headers)
        except httpx.TimeoutException as e:
            raise _Transient(f"timed out after {self.spec.timeout_s:g}s ({type(e).__name__})") from None
        except httpx.TransportError as e:
            raise _Transient(f"{type(e).__name__}: {e or 'connection failed'}") from None
        latency = time.perf_counter() - t0
        if r.status_code in RETRY_STATUS:
            raise _Transient(f"HTTP {r.status_code}: {_snippet(r.text)}", r.status_code,
                             _retry_after(r.headers.get("retry-after")))
        if r.status_code >= 400:
            raise _Fatal(f"HTTP {r.status_code}: {_snippet(r.text)}", r.status_code)
        try:
            data = r.json()
            choice = data["choices"][0]
            text = choice["message"]["content"] if kind == "chat" else choice["text"]
            # A null content (refusal, or a reasoning model that spent max_tokens thinking) is an answer.
            text = "" if text is None else str(text)
            usage = data.get("usage") or {}
            tokens = (int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0))
        except (ValueError, KeyError, IndexError, TypeError, AttributeError):
            raise _Transient(f"malformed response (HTTP {r.status_code}): {_snippet(r.text)!r}",
                             r.status_code) from None
        return text.strip(), tokens, latency, data


def run_many(endpoint: Endpoint, items: Sequence[T], fn: Callable[[Endpoint, T], Completion], *,
             workers: int = 1) -> list[Completion | EndpointError]:
    """`fn(endpoint, item)` for every item, in order; an item whose call fails for good gets its
    `EndpointError` in place of a completion instead of stopping the batch (contestants: a failure is
    recorded per item). Other exceptions are bugs and propagate."""

    def one(item: T) -> Completion | EndpointError:
        try:
            return fn(endpoint, item)
        except EndpointError as e:
            return e

    if workers <= 1:
        return [one(item) for item in items]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(one, items))


def _ok(completions: Sequence[Completion | EndpointError]) -> list[Completion]:
    return [c for c in completions if isinstance(c, Completion)]


def cost_per_1k_calls(completions: Sequence[Completion | EndpointError]) -> float:
    """Mean cost of a successful call times 1000, in USD (NaN when none succeeded)."""
    ok = _ok(completions)
    return float(1000 * np.mean([c.cost_usd for c in ok])) if ok else float("nan")


def latency_percentiles(completions: Sequence[Completion | EndpointError]) -> dict[str, float]:
    """p50/p95 of per-call latency over successful calls, keyed as in metrics.json."""
    lat = [c.latency_s for c in _ok(completions)]
    if not lat:
        return {"latency_p50_s": float("nan"), "latency_p95_s": float("nan")}
    return {"latency_p50_s": float(np.percentile(lat, 50)), "latency_p95_s": float(np.percentile(lat, 95))}
