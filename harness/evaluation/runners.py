"""Runners: one interface over transformers, llama.cpp and an Ollama server, fed already-rendered text.

A quality comparison across runners must measure the model, not a template difference. Every runner
here takes prompt texts rendered once by `harness.evaluation.prompting.render_prompt` (the tokenizer's chat
template) and never applies a template of its own: llama.cpp gets a raw completion of those tokens
(never llama-cpp-python's chat handler), Ollama gets `raw: true`.

Each runner returns `harness.evaluation.evaluate.Generation`s in input order (so `evaluate.score_items` makes
the same eval rows as a trial) and reports `size_bytes`, the model's size on disk, where it has one.
"""

from __future__ import annotations

import hashlib
import json
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from harness.errors import HarnessError
from harness.evaluation.evaluate import Generation, generate_texts
from harness.evaluation.prompting import END_OF_TURN_TOKENS


@runtime_checkable
class Runner(Protocol):
    name: str
    size_bytes: int | None

    def generate(self, texts: list[str], *, max_new_tokens: int) -> list[Generation]:
        """Greedy completions of already-rendered prompt texts, in input order."""
        ...


class HFRunner:
    """A transformers model (batched, left-padded greedy generation via `evaluate.generate_texts`)."""

    def __init__(self, model, tokenizer, batch_size: int = 8, *, name: str = "hf",
                 size_bytes: int | None = None) -> None:
        self.model, self.tokenizer, self.batch_size = model, tokenizer, batch_size
        self.name, self.size_bytes = name, size_bytes

    def generate(self, texts: list[str], *, max_new_tokens: int) -> list[Generation]:
        return generate_texts(self.model, self.tokenizer, list(texts), max_new_tokens=max_new_tokens,
                              batch_size=self.batch_size)


class LlamaCppRunner:
    """A GGUF file in llama-cpp-python: raw completions, one prompt per call, greedy.

    The text is tokenised by llama.cpp's own tokenizer with special tokens parsed and no BOS added
    (the rendered text already has whatever the template puts first; transformers is called with
    `add_special_tokens=False` likewise), as a deployment would. Given `tokenizer` (the HF one), the
    runner tokenises with it instead, so llama.cpp gets exactly the token ids transformers gets: a
    quantisation delta then cannot pick up the rare inputs where the two tokenizers disagree. The
    context is cleared before every prompt, so an answer never depends on the item before it.
    """

    def __init__(self, gguf_path: str | Path, n_ctx: int = 4096, n_threads: int | None = None, *,
                 name: str | None = None, stop: list[str] | None = None, n_gpu_layers: int = -1,
                 tokenizer: Any = None) -> None:
        import llama_cpp

        self.path = Path(gguf_path)
        if not self.path.is_file():
            raise HarnessError("GGUF file not found", where=self.path)
        self.name = name or self.path.stem
        self.size_bytes = self.path.stat().st_size
        self.stop = list(END_OF_TURN_TOKENS) if stop is None else list(stop)
        self.tokenizer = tokenizer
        try:
            self.llm = llama_cpp.Llama(model_path=str(self.path), n_ctx=n_ctx, n_threads=n_threads,
                                       n_gpu_layers=n_gpu_layers, seed=0, verbose=False)
        except ValueError as e:  # llama-cpp-python's "Failed to load model from file"
            raise HarnessError(f"llama.cpp could not load the GGUF: {e}", where=self.path) from e
        self.n_ctx = self.llm.n_ctx()
        self.generated_tokens = 0
        self.busy_s = 0.0
        self.calls: list[dict[str, float]] = []  # per call: latency_s, output_tokens

    def encode(self, text: str) -> list[int]:
        """The prompt tokens llama.cpp gets for a rendered text (the runner's boundary)."""
        if self.tokenizer is not None:
            return self.tokenizer(text, add_special_tokens=False)["input_ids"]
        return self.llama_encode(text)

    def llama_encode(self, text: str) -> list[int]:
        """llama.cpp's own tokenisation of a rendered text (special tokens parsed, no BOS added)."""
        return self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)

    def generate(self, texts: list[str], *, max_new_tokens: int) -> list[Generation]:
        out = []
        for i, text in enumerate(texts):
            tokens = self.encode(text)
            if len(tokens) + max_new_tokens > self.n_ctx:
                raise HarnessError(f"prompt {i} has {len(tokens)} tokens; with max_new_tokens={max_new_tokens} "
                                   f"it does not fit the context of {self.n_ctx} (raise n_ctx)", where=self.path)
            self.llm.reset()
            t0 = time.perf_counter()
            res = self.llm.create_completion(prompt=tokens, max_tokens=max_new_tokens, temperature=0.0,
                                             top_k=1, repeat_penalty=1.0, stop=self.stop, seed=0)
            elapsed = time.perf_counter() - t0
            n_out = int(res["usage"]["completion_tokens"])
            self.generated_tokens += n_out
            self.busy_s += elapsed
            self.calls.append({"latency_s": elapsed, "output_tokens": n_out})
            out.append(Generation(res["choices"][0]["text"].strip(), elapsed, len(tokens), n_out, i))
        return out

    @property
    def tokens_per_s(self) -> float:
        """Generated tokens over wall time of the calls so far (prompt processing included)."""
        return self.generated_tokens / self.busy_s if self.busy_s else float("nan")

    def close(self) -> None:
        self.llm.close()


class OllamaRunner:
    """A model served by Ollama (whose engine is llama.cpp), through its HTTP `/api/generate`.

    `raw: true` makes Ollama apply no template: the rendered text is the whole prompt. Sampling is
    greedy (temperature 0, top_k 1, seed 0). `size_bytes` is the model's size as `/api/tags` lists it.
    """

    def __init__(self, url: str = "http://localhost:11434", model: str = "", *, name: str | None = None,
                 stop: list[str] | None = None, timeout_s: float = 600.0) -> None:
        self.url, self.model = url.rstrip("/"), model
        self.name = name or f"ollama:{model}"
        self.stop = list(END_OF_TURN_TOKENS) if stop is None else list(stop)
        self.timeout_s = timeout_s
        self.size_bytes = self._size()

    @staticmethod
    def reachable(url: str = "http://localhost:11434", timeout_s: float = 1.0) -> bool:
        try:
            with urllib.request.urlopen(f"{url.rstrip('/')}/api/version", timeout=timeout_s) as r:
                return r.status == 200
        except (OSError, ValueError):
            return False

    @classmethod
    def from_gguf(cls, url: str, model: str, gguf_path: str | Path, **kwargs: Any) -> "OllamaRunner":
        """Register a GGUF file with the server as `model` (blob upload, then /api/create) and run it."""
        path = Path(gguf_path)
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        digest, base = f"sha256:{h.hexdigest()}", url.rstrip("/")
        try:
            _http(f"{base}/api/blobs/{digest}", None, method="HEAD", timeout_s=30)  # already there?
        except HarnessError:
            with open(path, "rb") as f:  # streamed, not read into memory
                _http(f"{base}/api/blobs/{digest}", f, method="POST", content_type="application/octet-stream",
                      length=path.stat().st_size)
        _http(f"{base}/api/create", json.dumps({"model": model, "files": {path.name: digest},
                                                "stream": False}).encode(), method="POST")
        return cls(url, model, **kwargs)

    def _size(self) -> int | None:
        try:
            tags = json.loads(_http(f"{self.url}/api/tags", None, method="GET", timeout_s=10))
        except HarnessError:
            return None
        for m in tags.get("models", []):
            if self.model in (m.get("name"), m.get("model")) or m.get("name") == f"{self.model}:latest":
                return m.get("size")
        return None

    def generate(self, texts: list[str], *, max_new_tokens: int) -> list[Generation]:
        out = []
        for i, text in enumerate(texts):
            body = {"model": self.model, "prompt": text, "raw": True, "stream": False,
                    "options": {"temperature": 0, "top_k": 1, "seed": 0, "num_predict": max_new_tokens,
                                "stop": self.stop}}
            t0 = time.perf_counter()
            res = json.loads(_http(f"{self.url}/api/generate", json.dumps(body).encode(), method="POST",
                                   timeout_s=self.timeout_s))
            elapsed = time.perf_counter() - t0
            out.append(Generation(res.get("response", "").strip(), elapsed, int(res.get("prompt_eval_count", 0)),
                                  int(res.get("eval_count", 0)), i))
        return out


def _http(url: str, data: Any, *, method: str, content_type: str = "application/json",
          timeout_s: float = 600.0, length: int | None = None) -> bytes:
    headers = {"Content-Type": content_type}
    if length is not None:
        headers["Content-Length"] = str(length)
    req = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=timeout_s) as r:
            return r.read()
    except urllib.error.HTTPError as e:
        detail = e.read().decode("utf-8", "replace")[:500]
        raise HarnessError(f"Ollama answered {e.code} to {method} {url}: {detail}") from e
    except (OSError, ValueError) as e:
        raise HarnessError(f"Ollama at {url} is not reachable: {e}") from e
