"""`harness data review`: a page on loopback that shows a dataset's pairs in batches, one decision per pair.

Starlette (the routes) under uvicorn (the HTTP server); the page is one static HTML file with its own
script, so nothing is built. Every decision goes through `harness.data.review.Review.decide`, which has
it on disk before the page hears back: a closed tab or a killed server loses nothing already decided."""

from __future__ import annotations

import socket
import threading
from importlib import resources
from typing import Any, Callable

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse
from starlette.routing import Route

from harness.data.example import Example
from harness.data.review import Review
from harness.errors import HarnessError

HOST = "127.0.0.1"  # loopback only: the page edits data files and has no login


def _pair(review: Review, pair_id: str) -> dict[str, Any]:
    ex: Example = review.current[pair_id]
    d = review.decisions.get(pair_id)
    return {"id": pair_id, "prompt": ex.prompt, "output": ex.reference, "original": review.original[pair_id].reference,
            "rejected": ex.rejected, "hash": review.hash_of(pair_id), "batch": review.batch_of(pair_id),
            "decision": d.decision if d else None, "reviewer": d.reviewer if d else None,
            "drafted": ex.meta.get("drafted"), "origin": ex.origin}


def _state(review: Review, reviewer: str, note: str | None) -> dict[str, Any]:
    batches = review.batches()
    return {"file": str(review.data_path), "mode": review.mode, "reviewer": reviewer, "note": note,
            "log": str(review.log_path), "reviewed": str(review.reviewed_path), "batch_size": review.batch_size,
            "resume": review.resume_batch(), "summary": review.summary(),
            "batches": [{"index": b, "size": len(ids), "decided": sum(i in review.decisions for i in ids),
                         "closed": review.closed(b)} for b, ids in enumerate(batches)]}


def make_app(review: Review, reviewer: str, note: str | None = None) -> Starlette:
    """The page and its JSON API over one `Review`; decisions are serialised by a lock."""
    lock = threading.Lock()
    page = resources.files("harness.review").joinpath("page.html").read_text(encoding="utf-8")

    def guarded(fn: Callable[[Request], Any]):
        async def endpoint(request: Request) -> JSONResponse:
            try:
                body = await request.json() if request.method == "POST" else None
                with lock:
                    return JSONResponse(fn(request, body))
            except HarnessError as e:
                return JSONResponse({"error": str(e)}, status_code=409)
            except (KeyError, ValueError, TypeError) as e:
                return JSONResponse({"error": f"bad request: {e}"}, status_code=400)
        return endpoint

    async def index(request: Request) -> HTMLResponse:
        return HTMLResponse(page)

    def state(request: Request, body: None) -> dict[str, Any]:
        return _state(review, reviewer, note)

    def batch(request: Request, body: None) -> dict[str, Any]:
        index = int(request.path_params["index"])
        batches = review.batches()
        if not 0 <= index < len(batches):
            raise ValueError(f"no batch {index + 1}: there are {len(batches)}")
        return {"index": index, "pairs": [_pair(review, i) for i in batches[index]]}

    def reread(request: Request, body: None) -> dict[str, Any]:
        n = int(request.query_params.get("n", 20))
        seed = request.query_params.get("seed")
        return {"pairs": [_pair(review, i) for i in review.reread(n, int(seed) if seed else None)]}

    def decide(request: Request, body: dict[str, Any]) -> dict[str, Any]:
        entry = review.decide(str(body["id"]), str(body["decision"]), reviewer=reviewer,
                              expected=body.get("hash"), output=body.get("output"))
        return {"pair": _pair(review, entry.id), "state": _state(review, reviewer, note)}

    return Starlette(routes=[
        Route("/", index),
        Route("/api/state", guarded(state)),
        Route("/api/batch/{index:int}", guarded(batch)),
        Route("/api/reread", guarded(reread)),
        Route("/api/decide", guarded(decide), methods=["POST"]),
    ])


def bind(port: int = 0) -> socket.socket:
    """A listening socket on loopback (port 0: any free one), listening before the URL is printed."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((HOST, port))
        # listen now, not when uvicorn starts: a browser opening the printed URL meanwhile waits in the backlog
        # instead of being refused
        sock.listen(128)
    except OSError as e:
        raise HarnessError(f"cannot listen on {HOST}:{port} ({e}); pick another --port") from e
    return sock


def serve(app: Starlette, sock: socket.socket) -> None:
    """Serve until Ctrl-C."""
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    server.run(sockets=[sock])
