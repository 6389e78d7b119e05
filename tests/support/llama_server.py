"""A real OpenAI-compatible server on loopback: llama-cpp-python's server with the embedded SmolLM2 GGUF.

Use the context manager (`with LlamaServer() as srv: srv.url`) or the fixtures `llama` / `llama_session`,
which tests/conftest.py provides to every test.

`llama` is one server per test session, restarted on the same port (so the same URL and cache keys)
when a test stopped it to prove something is served from a cache. Startup waits for readiness with a
bounded timeout and the process is always terminated. The server needs llama-cpp-python's `server`
extra: missing in a user's clone the tests skip, in CI they fail (see tests.support.ci.require).
"""

from __future__ import annotations

import atexit
import importlib.util
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterator

import httpx
import pytest

from tests.support.ci import require

MODEL_ALIAS = "smollm2-135m-instruct"
SERVER_EXTRA = ("fastapi", "uvicorn", "sse_starlette", "starlette_context", "pydantic_settings")


def free_port() -> int:
    """A loopback port nothing listens on (at the moment of asking)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def server_extra_missing() -> list[str]:
    return [m for m in SERVER_EXTRA if importlib.util.find_spec(m) is None]


class LlamaServer:
    """`python -m llama_cpp.server` serving one GGUF on 127.0.0.1; `url` is the OpenAI base URL (…/v1)."""

    def __init__(self, model: Path | None = None, *, port: int | None = None, n_ctx: int = 2048,
                 n_batch: int = 1, startup_timeout_s: float = 180.0, warm_up: bool = True) -> None:
        if model is None:
            from harness.models import embedded_gguf_path

            model = embedded_gguf_path(MODEL_ALIAS)
        self.model_path = Path(model)
        self.model = MODEL_ALIAS
        self.port = port or free_port()
        self.n_ctx = n_ctx
        # Measured on a busy 2-core box: feeding the prompt one token at a time was 3-5x faster end to end
        # than llama.cpp's default 512-token batches, which stall when the cores are shared.
        self.n_batch = n_batch
        self.startup_timeout_s = startup_timeout_s
        self.warm_up = warm_up
        self.proc: subprocess.Popen | None = None
        self.log_path = Path(tempfile.gettempdir()) / f"llama-server-{os.getpid()}-{self.port}.log"
        atexit.register(self.stop)  # a crashed test run must not leave the server behind

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def _log_tail(self, n: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return "(no log)"

    def start(self) -> "LlamaServer":
        if self.running:
            return self
        cmd = [sys.executable, "-m", "llama_cpp.server", "--model", str(self.model_path),
               "--model_alias", self.model, "--host", "127.0.0.1", "--port", str(self.port),
               "--n_ctx", str(self.n_ctx), "--n_batch", str(self.n_batch), "--n_ubatch", str(self.n_batch)]
        # A file, not a pipe: nobody drains a pipe while the tests run, and a full pipe blocks the server.
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.startup_timeout_s
        while True:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"llama.cpp server exited with code {self.proc.returncode} while starting:\n"
                                   f"{self._log_tail()}")
            try:
                if httpx.get(f"{self.url}/models", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"llama.cpp server not ready after {self.startup_timeout_s:.0f}s:\n"
                                   f"{self._log_tail()}")
            time.sleep(0.2)
        if self.warm_up:
            # The first evaluation is several times slower than the rest: pay it here, not in a test's latency.
            left = max(10.0, deadline - time.monotonic())
            httpx.post(f"{self.url}/completions", json={"prompt": "Hi", "max_tokens": 1}, timeout=left)

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        self.log_path.unlink(missing_ok=True)

    def ensure_running(self) -> "LlamaServer":
        return self.start()

    def __enter__(self) -> "LlamaServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def require_llama_server() -> None:
    missing = server_extra_missing()
    require(not missing, f"llama-cpp-python's server extra is not installed (missing {', '.join(missing)}): "
                         "pip install 'llama-cpp-python[server]'")


@pytest.fixture(scope="session")
def llama_session() -> Iterator[LlamaServer]:
    """The session's server object; started lazily by `llama`, stopped at the end of the session."""
    require_llama_server()
    server = LlamaServer()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def llama(llama_session: LlamaServer) -> LlamaServer:
    """A running server (restarted if an earlier test stopped it)."""
    return llama_session.ensure_running()
