"""Hostile callback receivers for the tests: local HTTP servers on 127.0.0.1 that misbehave.

Each `Receiver` accepts connections on a thread, reads one HTTP request (headers and a
Content-Length body), records it, and answers with its behaviour:

- `ok`: 204, at once;
- `drip`: the status line one byte every `drip_every_s`, for as long as the client stays;
- `gigabytes`: 200 with `Content-Length: 2 GiB` and zeros as fast as the socket takes them,
  until the client goes away or `flood_cap` bytes went out (a client that reads everything
  would get them all: the cap keeps the test itself from filling the machine's memory);
- `redirect`: 307 to `location`.

`sent_bytes` counts what the kernel accepted from the receiver; `client_left` is set when
a write failed because the client closed the connection. With `tls` (a server
`ssl.SSLContext`) it speaks HTTPS and records the server name each client asked for (SNI).
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import orjson

GIB = 1 << 30
MIB = 1 << 20


@dataclass
class Received:
    """One request as the receiver read it."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    at: float = field(default_factory=time.monotonic)

    def events(self) -> list[dict[str, object]]:
        """The callback events of the body (an object, or an array of them)."""
        doc = orjson.loads(self.body)
        return list(doc) if isinstance(doc, list) else [doc]


class Receiver:
    """A threaded HTTP receiver with one behaviour (see the module docstring)."""

    def __init__(
        self,
        behaviour: str,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        location: str = "",
        drip_every_s: float = 4.0,
        drip_for_s: float = 120.0,
        flood_cap: int = 256 * MIB,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.behaviour = behaviour
        self.location = location
        self.drip_every_s = drip_every_s
        self.drip_for_s = drip_for_s
        self.flood_cap = flood_cap
        self.received: list[Received] = []
        self.sent_bytes = 0
        self.client_left = threading.Event()
        self.connections = 0
        self.server_names: list[str | None] = []
        self.tls = tls
        if tls is not None:
            tls.sni_callback = self._sni
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._sock = socket.socket(
            socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM
        )
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind((host, port))
        self._sock.listen(64)
        self._sock.settimeout(0.5)
        self.host, self.port = host, self._sock.getsockname()[1]
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        """The receiver's callback URL."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/hook"

    def events_for(self, job_id: str) -> list[str]:
        """The event names received about `job_id`, in arrival order."""
        with self._lock:
            requests = list(self.received)
        return [str(e["event"]) for r in requests for e in r.events() if e.get("job_id") == job_id]

    def close(self) -> None:
        """Stop accepting and end every open behaviour."""
        self._stop.set()
        self._thread.join(timeout=5)
        self._sock.close()

    # -- server side -----------------------------------------------------------------------

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _sni(self, sock: ssl.SSLObject, name: str | None, context: ssl.SSLContext) -> None:
        self.server_names.append(name)

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(10)
            try:
                if self.tls is not None:
                    conn = self.tls.wrap_socket(conn, server_side=True)
                request = _read_request(conn)
            except (OSError, ValueError):
                return
            with self._lock:
                self.received.append(request)
            answer: Callable[[socket.socket], None] = getattr(self, f"_{self.behaviour}")
            try:
                answer(conn)
            except (BrokenPipeError, ConnectionResetError, TimeoutError):
                self.client_left.set()

    def _send(self, conn: socket.socket, data: bytes) -> None:
        conn.sendall(data)
        self.sent_bytes += len(data)

    def _ok(self, conn: socket.socket) -> None:
        self._send(conn, b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n")

    def _redirect(self, conn: socket.socket) -> None:
        self._send(
            conn,
            b"HTTP/1.1 307 Temporary Redirect\r\nLocation: "
            + self.location.encode()
            + b"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        )

    def _drip(self, conn: socket.socket) -> None:
        line = b"HTTP/1.1 200 OK\r\n"
        ends = time.monotonic() + self.drip_for_s
        i = 0
        while not self._stop.is_set() and time.monotonic() < ends:
            self._send(conn, line[i % len(line) : i % len(line) + 1])
            i += 1
            if self._stop.wait(self.drip_every_s):
                return
            if _peer_closed(conn):
                self.client_left.set()
                return

    def _gigabytes(self, conn: socket.socket) -> None:
        self._send(
            conn,
            b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
            + f"Content-Length: {2 * GIB}\r\n\r\n".encode(),
        )
        chunk = bytes(MIB)
        while not self._stop.is_set() and self.sent_bytes < self.flood_cap:
            self._send(conn, chunk)


def _read_request(conn: socket.socket) -> Received:
    data = b""
    while b"\r\n\r\n" not in data:
        more = conn.recv(65536)
        if not more:
            raise ValueError("connection closed before the request was complete")
        data += more
        if len(data) > 1 * MIB:
            raise ValueError("request headers too large")
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    method, path, _ = lines[0].split(" ", 2)
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length") or 0)
    while len(body) < length:
        more = conn.recv(65536)
        if not more:
            raise ValueError("connection closed inside the body")
        body += more
    return Received(method, path, headers, body[:length])


def _peer_closed(conn: socket.socket) -> bool:
    """True if the client has closed its end (a zero-byte peek)."""
    with contextlib.suppress(BlockingIOError, InterruptedError):
        conn.setblocking(False)
        try:
            return conn.recv(1, socket.MSG_PEEK) == b""
        except (ConnectionResetError, BrokenPipeError):
            return True
        finally:
            conn.setblocking(True)
            conn.settimeout(10)
    return False
