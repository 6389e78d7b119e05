"""A real, misbehaving OpenAI-compatible HTTP server on loopback, for failure tests.

It serves a fixed script of replies in order (503, 429 with Retry-After, malformed JSON, ...), then a
final reply for every later request, and records each request (time, path, headers, body). The script
is finite, so a client that retries forever still sees a bounded number of distinct replies and the
test's own bound (`max_requests`) stops it with HTTP 418.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Reply:
    status: int = 200
    body: str | None = None  # None: a well-formed completion of `text` with `usage` tokens
    headers: dict[str, str] = field(default_factory=dict)
    text: str = "fine"
    usage: tuple[int, int] = (7, 3)


def ok(text: str = "fine", prompt_tokens: int = 7, completion_tokens: int = 3) -> Reply:
    return Reply(text=text, usage=(prompt_tokens, completion_tokens))


def error(status: int, retry_after: str | None = None) -> Reply:
    headers = {"Retry-After": retry_after} if retry_after is not None else {}
    return Reply(status, json.dumps({"error": {"message": f"status {status}"}}), headers)


def malformed(body: str = '{"choices": [{"message": ') -> Reply:
    return Reply(200, body)


@dataclass
class Request:
    t: float
    path: str
    headers: dict[str, str]
    body: dict[str, Any]


def _completion_body(path: str, req: dict[str, Any], text: str, usage: tuple[int, int]) -> str:
    if path.endswith("/chat/completions"):
        choice: dict[str, Any] = {"index": 0, "message": {"role": "assistant", "content": text},
                                  "finish_reason": "stop"}
    else:
        choice = {"index": 0, "text": text, "finish_reason": "stop"}
    return json.dumps({"object": "chat.completion", "model": req.get("model"), "choices": [choice],
                       "usage": {"prompt_tokens": usage[0], "completion_tokens": usage[1],
                                 "total_tokens": sum(usage)}})


class FlakyServer:
    """`with FlakyServer([error(503), ok()]) as srv:` then call `srv.url` (base URL ending in /v1)."""

    def __init__(self, script: list[Reply] | None = None, then: Reply | None = None, *,
                 max_requests: int = 50) -> None:
        self.script = list(script or [])
        self.then = then or ok()
        self.max_requests = max_requests
        self.requests: list[Request] = []
        self._lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.port: int | None = None

    @property
    def url(self) -> str:
        """Stays valid after `stop()`, so a test can show what a call does with the server gone."""
        assert self.port is not None, "server not started"
        return f"http://127.0.0.1:{self.port}/v1"

    def _next(self, request: Request) -> Reply:
        with self._lock:
            self.requests.append(request)
            n = len(self.requests)
            if n > self.max_requests:
                return Reply(418, '{"error": "flaky server request bound reached"}')
            return self.script[n - 1] if n <= len(self.script) else self.then

    def start(self) -> "FlakyServer":
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                try:
                    body = json.loads(raw or b"{}")
                except ValueError:
                    body = {"_raw": raw.decode(errors="replace")}
                reply = server._next(Request(time.monotonic(), self.path, dict(self.headers), body))
                payload = reply.body
                if payload is None:
                    payload = _completion_body(self.path, body, reply.text, reply.usage)
                data = payload.encode()
                self.send_response(reply.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in reply.headers.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass  # keep test output clean

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> "FlakyServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def gaps(self) -> list[float]:
        """Seconds between consecutive requests: the client's backoff, as the server saw it."""
        return [b.t - a.t for a, b in zip(self.requests, self.requests[1:])]

