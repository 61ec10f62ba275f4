"""An HTTP proxy for tests that sits between a client and a server and misbehaves on purpose.

Which requests fail is drawn from a seeded random plan that depends only on the requests, not on their order;
the kinds of fault take turns, so that every kind occurs once five requests have failed: 429 with Retry-After,
500, a connection dropped before the request reaches the server, a connection dropped after the server answered
(the work is done but the answer lost), and a delay. The plan is bounded: one request body is faulted at most
`max_faults_per_body` times, so a client that retries more often than that always gets through.
`dead = True` makes it behave like a server that is gone (every connection is dropped). It records every
request the server answered.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import random
import threading
from collections import Counter
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

FAULTS = ("429", "500", "drop_before", "drop_after", "delay")


class FaultProxy:
    def __init__(self, upstream: str, rate: float = 0.0, seed: int = 0, faults: tuple[str, ...] = FAULTS,
                 max_faults_per_body: int = 2, retry_after: str = "0.05", max_delay_s: float = 0.2,
                 faulted_paths: tuple[str, ...] = ("/v1/completions", "/v1/chat/completions", "/tokenize")):
        self.upstream = upstream  # http://host:port (no path); may be changed while running
        self.rate, self.faults, self.max_faults_per_body = rate, faults, max_faults_per_body
        self.retry_after, self.max_delay_s, self.faulted_paths = retry_after, max_delay_s, faulted_paths
        self.seed = seed
        self.lock = threading.Lock()
        self.dead = False
        self.outcomes: Counter[str] = Counter()  # fault kind or "forwarded"
        self.forwarded: list[tuple[str, dict | None, str]] = []  # (path, JSON body, body key) the server answered
        self.faults_per_body: Counter[str] = Counter()  # by body key: every fault, delays included
        self.failures_per_body: Counter[str] = Counter()  # by body key: the faults that cost the client a try
        self.after_forward: Callable[[str, int], None] | None = None  # (path, number forwarded so far)
        self.hide: set[str] = set()  # paths answered with 404, as by a server without them
        self.rewrite: Callable[[str, dict], dict] | None = None  # edits the server's JSON answers
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                return None

            def do_GET(self) -> None:
                proxy.handle(self, "GET")

            def do_POST(self) -> None:
                proxy.handle(self, "POST")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def __enter__(self) -> FaultProxy:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)

    @staticmethod
    def key(path: str, body: bytes) -> str:
        return hashlib.sha256(path.encode() + body).hexdigest()

    def decide(self, path: str, body: bytes) -> str | None:
        if self.rate <= 0 or path not in self.faulted_paths:
            return None
        key = self.key(path, body)
        with self.lock:
            # drawn from the request and how often it was faulted, not from arrival order: the same plan every run
            rng = random.Random(f"{self.seed}:{key}:{self.faults_per_body[key]}")
            if self.faults_per_body[key] >= self.max_faults_per_body or rng.random() >= self.rate:
                return None
            self.faults_per_body[key] += 1
            fault = self.faults[sum(self.faults_per_body.values()) % len(self.faults)]
            self.failures_per_body[key] += fault != "delay"
            return fault

    def handle(self, handler: BaseHTTPRequestHandler, method: str) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length) if length else b""
        path = handler.path
        if self.dead:
            return self._drop(handler, "dead")
        if path in self.hide:
            return self._reply(handler, 404, json.dumps({"detail": "Not Found"}).encode(), "hidden")
        fault = self.decide(path, body)
        if fault == "429":
            return self._reply(handler, 429, b'{"error": {"message": "rate limited"}}', fault,
                               {"Retry-After": self.retry_after})
        if fault == "500":
            return self._reply(handler, 500, b'{"error": {"message": "injected failure"}}', fault)
        if fault == "drop_before":
            return self._drop(handler, fault)
        if fault == "delay":
            threading.Event().wait(random.Random(f"{self.seed}:{path}:{len(body)}").uniform(0, self.max_delay_s))
        try:
            status, data = self._forward(method, path, body, handler.headers.get("Authorization"))
        except OSError:
            return self._drop(handler, "upstream_down")
        if fault == "drop_after":
            return self._drop(handler, fault)
        if self.rewrite is not None and status == 200:
            data = json.dumps(self.rewrite(path, json.loads(data))).encode()
        with self.lock:
            self.forwarded.append((path, json.loads(body) if body else None, self.key(path, body)))
            count = len(self.forwarded)
        self._reply(handler, status, data, "forwarded" if fault is None else fault)
        if self.after_forward is not None:
            self.after_forward(path, count)

    def _forward(self, method: str, path: str, body: bytes, auth: str | None) -> tuple[int, bytes]:
        parts = urlsplit(self.upstream)
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
        try:
            headers = {"Content-Type": "application/json"} | ({"Authorization": auth} if auth else {})
            conn.request(method, path, body=body or None, headers=headers)
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            conn.close()

    def _reply(self, handler: BaseHTTPRequestHandler, status: int, data: bytes, outcome: str,
               headers: dict[str, str] | None = None) -> None:
        with self.lock:
            self.outcomes[outcome] += 1
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(data)))
        for key, value in (headers or {}).items():
            handler.send_header(key, value)
        handler.end_headers()
        handler.wfile.write(data)

    def _drop(self, handler: BaseHTTPRequestHandler, outcome: str) -> None:
        """Close the connection without an answer, as a crashing server or a broken network does."""
        with self.lock:
            self.outcomes[outcome] += 1
        handler.close_connection = True
