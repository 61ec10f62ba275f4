"""A proxy in front of the Docker socket that can make the engine vanish, for fault tests and the fault benchmark.

Point DOCKER_HOST at `unix://<path>` and every docker CLI and SDK call goes through it. `outage(seconds)` cuts
every open connection (the attached streams of `docker run -i` workers included) and refuses new ones for that
long: to its clients the engine is gone, as during a dockerd restart, while the real engine, which other users
share, is never touched.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from pathlib import Path

DEFAULT_ENGINE = "/var/run/docker.sock"


def engine_socket() -> str:
    """The socket of the engine this process talks to (DOCKER_HOST when it names a unix socket)."""
    host = os.environ.get("DOCKER_HOST", "")
    return host[len("unix://"):] if host.startswith("unix://") else DEFAULT_ENGINE


class DockerSocketProxy:
    """Forwards connections on `path` to the engine's socket; `down()`/`up()` or `outage(s)` cut it off."""

    def __init__(self, path: str | Path, target: str | None = None):
        self.path = str(path)
        self.target = target or engine_socket()
        self._listener: socket.socket | None = None
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._down = False
        self._stopped = threading.Event()
        self.cut = 0  # connections cut by outages

    @property
    def docker_host(self) -> str:
        return f"unix://{self.path}"

    def start(self) -> DockerSocketProxy:
        if os.path.exists(self.path):
            os.unlink(self.path)
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._listener.bind(self.path)
        self._listener.listen(128)
        self._listener.settimeout(0.2)
        threading.Thread(target=self._accept, daemon=True, name="docker-proxy").start()
        return self

    def _accept(self) -> None:
        assert self._listener is not None
        while not self._stopped.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            if self._down:
                client.close()  # the engine is "gone": the client sees its connection refused or reset
                continue
            try:
                engine = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                engine.connect(self.target)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._open.update((client, engine))
            for src, dst in ((client, engine), (engine, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    dst.shutdown(socket.SHUT_WR)  # pass a half-close on: `docker run -i` closes stdin this way
                    return
                dst.sendall(data)
        except OSError:
            self._close(src, dst)

    def _close(self, *socks: socket.socket) -> None:
        for s in socks:
            with self._lock:
                self._open.discard(s)
            try:
                s.close()
            except OSError:
                pass

    def down(self) -> None:
        """Cut every connection and refuse new ones."""
        self._down = True
        with self._lock:
            victims = list(self._open)
            self._open.clear()
        self.cut += len(victims) // 2
        for s in victims:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()

    def up(self) -> None:
        self._down = False

    def outage(self, seconds: float) -> None:
        """The engine is unreachable for `seconds` (blocks for that long)."""
        self.down()
        time.sleep(seconds)
        self.up()

    def stop(self) -> None:
        self._stopped.set()
        self.down()
        if self._listener is not None:
            self._listener.close()
        if os.path.exists(self.path):
            os.unlink(self.path)

    def __enter__(self) -> DockerSocketProxy:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
