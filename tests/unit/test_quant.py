"""Quantisation delta and local serving: merge → GGUF → llama.cpp, with one rendered prompt for every runner."""

from __future__ import annotations

import json
import os

import pytest

from harness.errors import HarnessError
from tests.support.quant import QUESTION

OLLAMA_URL = os.environ.get("OLLAMA_URL", "http://localhost:11434")


def test_ollama_runner_raw_prompt(harness_home):
    """Against a real Ollama server when one is reachable (set OLLAMA_URL); Ollama is not installable here."""
    from harness.evaluation.prompting import render_prompt
    from harness.evaluation.runners import OllamaRunner
    from harness.models import embedded_gguf_path, load_tokenizer, resolve_model

    if not OllamaRunner.reachable(OLLAMA_URL):
        pytest.skip(f"no Ollama server at {OLLAMA_URL} (Ollama is not pip-installable, so this machine has "
                    "none; set OLLAMA_URL to run this test against one)")
    tok = load_tokenizer(resolve_model("smollm2-135m-instruct"))
    text = render_prompt(tok, [{"role": "user", "content": QUESTION}])
    runner = OllamaRunner.from_gguf(OLLAMA_URL, "harness-smollm2-q4_1", embedded_gguf_path("smollm2-135m-instruct"))
    (gen,) = runner.generate([text], max_new_tokens=24)
    assert "Paris" in gen.text, gen.text
    assert gen.output_tokens > 0


def test_ollama_runner_wire_format(tmp_path):
    """Without a server: what OllamaRunner sends (a local stand-in records it): raw text, greedy, no template."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from harness.evaluation.runners import OllamaRunner

    seen: list[tuple[str, str, bytes]] = []

    class Handler(BaseHTTPRequestHandler):
        def _reply(self, code: int, body: dict | None = None) -> None:
            data = json.dumps(body or {}).encode()
            self.send_response(code)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_HEAD(self):
            seen.append(("HEAD", self.path, b""))
            self.send_response(404)
            self.end_headers()

        def do_GET(self):
            seen.append(("GET", self.path, b""))
            self._reply(200, {"version": "0"} if self.path == "/api/version" else
                        {"models": [{"name": "tiny:latest", "model": "tiny:latest", "size": 123}]})

        def do_POST(self):
            body = self.rfile.read(int(self.headers["Content-Length"]))
            seen.append(("POST", self.path, body))
            if self.path == "/api/generate":
                self._reply(200, {"response": " Paris.\n", "prompt_eval_count": 7, "eval_count": 3})
            else:
                self._reply(200, {"status": "success"})

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_port}"
    try:
        assert OllamaRunner.reachable(url)
        gguf = tmp_path / "tiny.gguf"
        gguf.write_bytes(b"GGUF" + bytes(60))
        runner = OllamaRunner.from_gguf(url, "tiny", gguf)
        text = "<|im_start|>user\nCapital of France? é<|im_end|>\n<|im_start|>assistant\n"
        (gen,) = runner.generate([text], max_new_tokens=5)
    finally:
        server.shutdown()
    assert runner.size_bytes == 123
    assert (gen.text, gen.input_tokens, gen.output_tokens) == ("Paris.", 7, 3)
    posts = {path: body for method, path, body in seen if method == "POST"}
    assert any(p.startswith("/api/blobs/sha256:") and b == gguf.read_bytes() for p, b in posts.items())
    assert json.loads(posts["/api/create"])["model"] == "tiny"
    request = json.loads(posts["/api/generate"])
    assert request["prompt"] == text and request["raw"] is True and request["stream"] is False
    assert request["options"]["temperature"] == 0 and request["options"]["num_predict"] == 5
    assert "template" not in request and "system" not in request


def test_export_rejects_bad_types_and_dirs(tmp_path):
    from harness.export.gguf import export_gguf

    with pytest.raises(HarnessError, match="unknown GGUF type"):
        export_gguf(tmp_path, tmp_path / "out", ("q3_xyz",))
    with pytest.raises(HarnessError, match="no config.json"):
        export_gguf(tmp_path, tmp_path / "out", ("q8_0",))
