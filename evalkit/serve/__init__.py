"""`evalkit serve`: any evalkit model behind an OpenAI-compatible HTTP API (FastAPI on uvicorn).

    evalkit serve --model codestral-mamba                       # http://127.0.0.1:8000/v1
    evalkit serve --model reference --tasks humaneval,mmlu      # the harness self-check, over HTTP

`engines` holds what answers (the native models, batched through one worker thread; `reference` and
`replay:FILE` for the prompts of `--tasks`), `app` the routes. Needs the `serve` extra (fastapi, uvicorn).
"""

from __future__ import annotations

import ipaddress
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from evalkit.backends import backend_class, resolve_backend
from evalkit.errors import BackendError
from evalkit.serve.engines import Engine, KnownAnswersEngine, NativeEngine, PromptIndex

__all__ = ["Engine", "build_engine", "is_loopback", "serve", "serving"]


def build_engine(spec: str, tasks: list[str] | None = None, data=None, prompt=None, task_options=None,
                 backend_options: dict | None = None, name: str | None = None, run_seed: int = 1234) -> Engine:
    """The engine for `--model spec`: a native model, or `reference` / `replay:FILE` answering `tasks`."""
    kind = backend_class(spec).name
    name = name or spec
    if kind == "native":
        return NativeEngine(name, resolve_backend(spec, **(backend_options or {})))
    if kind in ("reference", "replay"):
        if not tasks:
            raise BackendError(f"--model {spec} answers only known prompts: name them with --tasks")
        from evalkit.data import DataConfig

        index = PromptIndex.build(tasks, data or DataConfig(), prompt, task_options)
        backend = resolve_backend(spec, known_ids=index.known_ids, **(backend_options or {}))
        return KnownAnswersEngine(name, backend, index, run_seed)
    raise BackendError(f"evalkit serve serves evalkit's own models, `reference` and `replay:FILE`, not {kind}")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _bind(host: str, port: int) -> socket.socket:
    family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as e:
        sock.close()
        raise BackendError(f"cannot listen on {host}:{port}: {e.strerror or e}") from e
    sock.listen(2048)
    return sock


def _url(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://{f'[{host}]' if ':' in host else host}:{port}/v1"


def _server(engine: Engine, api_key: str | None):
    import uvicorn

    from evalkit.serve.app import create_app

    config = uvicorn.Config(create_app(engine, api_key), log_level="warning", access_log=False, lifespan="off",
                            timeout_graceful_shutdown=5)
    return uvicorn.Server(config)


def serve(engine: Engine, host: str = "127.0.0.1", port: int = 8000, api_key: str | None = None,
          ready: Callable[[str], None] = print) -> None:
    """Serve until interrupted; `ready(base_url)` is called once the port is bound (port 0 picks a free one)."""
    sock = _bind(host, port)
    server = _server(engine, api_key)
    ready(_url(sock))
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
        engine.close()


@contextmanager
def serving(engine: Engine, host: str = "127.0.0.1", port: int = 0, api_key: str | None = None,
            start_timeout_s: float = 30.0) -> Iterator[str]:
    """Serve `engine` from a background thread (tests, benchmarks); yields the base URL. The engine stays open."""
    sock = _bind(host, port)
    server = _server(engine, api_key)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="evalkit-serve", daemon=True)
    thread.start()
    deadline = time.monotonic() + start_timeout_s
    while not server.started and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.01)
    try:
        if not server.started:
            raise BackendError(f"the server did not start within {start_timeout_s:.0f} s")
        yield _url(sock)
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()
