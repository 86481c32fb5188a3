"""The HTTP protocol the API runs on (serving/http/protocol.py): a response's head and body leave
in one write, and nothing HTTP needs is held back: a streamed head, `100 Continue`, HEAD answers,
a close right after the head."""

from __future__ import annotations

import asyncio
import select
import socket
import threading
import time
from typing import Any

import httpx

from batchrec_dagster.serving.api.app import create_app
from batchrec_dagster.serving.http.protocol import (
    BODY_IDLE_S,
    HEADER_TIMEOUT_S,
    KEEP_ALIVE_S,
    HeadWithBody,
    is_response_head,
    with_timeouts,
)
from tests.harness.serving import ServerThread

HEAD = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n"


class Recording(asyncio.Transport):
    """Counts the writes that reach the transport. A real socket cannot show this: two writes
    may arrive at the reader as one read, or one write as two."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.closed = False
        self.eof = False

    def write(self, data: Any) -> None:
        self.writes.append(bytes(data))

    def close(self) -> None:
        self.closed = True

    def write_eof(self) -> None:
        self.eof = True

    def is_closing(self) -> bool:
        return self.closed


def test_a_head_and_its_body_are_one_write() -> None:
    async def scenario() -> Recording:
        real = Recording()
        transport = HeadWithBody(real, asyncio.get_running_loop())
        transport.write(HEAD)
        assert real.writes == []  # held for the body
        transport.write(b"{}")
        await asyncio.sleep(0)  # let the fallback flush run: it must find nothing left to send
        return real

    assert asyncio.run(scenario()).writes == [HEAD + b"{}"]


def test_a_head_without_a_body_in_the_same_step_goes_out_alone() -> None:
    async def scenario() -> Recording:
        real = Recording()
        transport = HeadWithBody(real, asyncio.get_running_loop())
        transport.write(HEAD)
        await asyncio.sleep(0)  # one loop iteration: the fallback flush runs
        assert real.writes == [HEAD]
        transport.write(b"{}")
        return real

    assert asyncio.run(scenario()).writes == [HEAD, b"{}"]


def test_writelines_and_write_eof_send_a_held_head_first() -> None:
    async def scenario() -> Recording:
        real = Recording()
        transport = HeadWithBody(real, asyncio.get_running_loop())
        transport.write(HEAD)
        transport.writelines([b"{", b"}"])
        transport.write(HEAD)
        transport.write_eof()
        return real

    real = asyncio.run(scenario())
    assert real.writes == [HEAD + b"{}", HEAD]
    assert real.eof


def test_close_sends_a_held_head_first_and_other_writes_pass_straight_through() -> None:
    async def scenario() -> Recording:
        real = Recording()
        transport = HeadWithBody(real, asyncio.get_running_loop())
        transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        transport.write(b"5\r\nhello\r\n")  # a chunk of a streamed body
        transport.write(HEAD)
        transport.close()
        assert transport.is_closing()  # delegated to the real transport
        return real

    real = asyncio.run(scenario())
    assert real.writes == [b"HTTP/1.1 100 Continue\r\n\r\n", b"5\r\nhello\r\n", HEAD]
    assert real.closed


def test_what_counts_as_a_response_head() -> None:
    assert is_response_head(HEAD)
    assert not is_response_head(b"HTTP/1.1 100 Continue\r\n\r\n")
    assert not is_response_head(b"HTTP/1.1 200 OK\r\ncontent-le")  # incomplete
    assert not is_response_head(b'{"a": "HTTP/1.1 "}\r\n\r\n')


# -- over real HTTP --------------------------------------------------------------------------------

class StreamingApp:
    """`/stream` sends its head, then its body only once the test sets `release`; anything else
    echoes the request body."""

    def __init__(self) -> None:
        self.release = threading.Event()

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                await send({"type": message["type"] + ".complete"})
                if message["type"] == "lifespan.shutdown":
                    return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        if scope["path"] == "/stream":
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"transfer-encoding", b"chunked")]})
            released = await asyncio.to_thread(self.release.wait, 30)
            await send({"type": "http.response.body", "body": b"late" if released else b"timeout"})
            return
        answer = b"echo:" + body
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/plain"),
                                (b"content-length", str(len(answer)).encode())]})
        await send({"type": "http.response.body", "body": answer})


def read_until(sock: socket.socket, marker: bytes, have: bytes = b"") -> bytes:
    data = have
    while marker not in data:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed before {marker!r}; got {data!r}"
        data += chunk
    return data


def read_response(sock: socket.socket) -> tuple[bytes, bytes]:
    data = read_until(sock, b"\r\n\r\n")
    head, _, rest = data.partition(b"\r\n\r\n")
    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length:"))
    while len(rest) < length:
        chunk = sock.recv(65536)
        assert chunk
        rest += chunk
    return head, rest


def connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def test_answers_over_real_http_keep_alive_head_and_100_continue() -> None:
    with ServerThread(StreamingApp()) as server, connect(server.port) as sock:
        for i in range(3):  # keep-alive: several answers on one connection
            body = f"n{i}".encode()
            request = b"POST /echo HTTP/1.1\r\nhost: t\r\ncontent-length: %d\r\n\r\n%s"
            sock.sendall(request % (len(body), body))
            head, answer = read_response(sock)
            assert head.startswith(b"HTTP/1.1 200 OK") and answer == b"echo:" + body

        # Expect: 100-continue: the interim answer must come before the client sends its body
        sock.sendall(b"POST /echo HTTP/1.1\r\nhost: t\r\nexpect: 100-continue\r\ncontent-length: 2\r\n\r\n")
        interim = read_until(sock, b"\r\n\r\n")
        assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(b"ok")
        head, answer = read_response(sock)
        assert head.startswith(b"HTTP/1.1 200 OK") and answer == b"echo:ok"

        # HEAD: the head with its content-length, and no body
        sock.sendall(b"HEAD /echo HTTP/1.1\r\nhost: t\r\n\r\n")
        head = read_until(sock, b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 OK") and b"content-length: 5" in head
        sock.sendall(b"POST /echo HTTP/1.1\r\nhost: t\r\ncontent-length: 1\r\n\r\nx")
        head, answer = read_response(sock)
        assert answer == b"echo:x"  # nothing was left over from the HEAD answer


def test_a_streamed_head_reaches_the_client_before_its_body_exists() -> None:
    app = StreamingApp()
    with ServerThread(app) as server, connect(server.port) as sock:
        sock.sendall(b"GET /stream HTTP/1.1\r\nhost: t\r\n\r\n")
        head = read_until(sock, b"\r\n\r\n")  # times out (10 s) if the head waits for the body
        assert head.startswith(b"HTTP/1.1 200 OK") and b"transfer-encoding: chunked" in head
        assert not app.release.is_set()
        app.release.set()
        rest = read_until(sock, b"0\r\n\r\n", head.partition(b"\r\n\r\n")[2])
        assert rest == b"4\r\nlate\r\n0\r\n\r\n"


def _watch_until_closed(sockets: dict[str, socket.socket], deadline_s: float,
                        trickle: dict[str, bytes]) -> dict[str, tuple[float | None, bytes]]:
    """Read every socket until the server closes it, sending one byte of `trickle[name]` to each
    of those every 0.25 s (a slow client); per socket, the seconds until closed (None: still open
    at the deadline) and what the server sent."""
    started = time.monotonic()
    closed: dict[str, float | None] = dict.fromkeys(sockets)
    received = {name: b"" for name in sockets}
    position = dict.fromkeys(trickle, 0)
    next_byte = started
    while any(t is None for t in closed.values()) and time.monotonic() - started < deadline_s:
        if time.monotonic() >= next_byte:
            next_byte += 0.25
            for name, data in trickle.items():
                if closed[name] is None and position[name] < len(data):
                    try:
                        sockets[name].send(data[position[name]:position[name] + 1])
                        position[name] += 1
                    except OSError:
                        pass
        open_ = [s for name, s in sockets.items() if closed[name] is None]
        for sock in select.select(open_, [], [], 0.05)[0]:
            name = next(n for n, s in sockets.items() if s is sock)
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                chunk = b""
            received[name] += chunk
            if not chunk:
                closed[name] = time.monotonic() - started
    return {name: (closed[name], received[name]) for name in sockets}


def test_idle_and_slow_connections_are_closed(served) -> None:
    """D12: a connection that sends nothing, one that sends its headers a byte at a time (slow
    loris) and one that stops in the middle of its body were held forever, with no key needed.
    Each is closed within the header or body timeout (the slow ones with a 408), over real
    sockets against the server as `batchrec serve` configures it."""
    port = int(served.url.rsplit(":", 1)[1])
    sockets = {name: socket.create_connection(("127.0.0.1", port)) for name in
               ("idle", "slow headers", "stalled body", "idle after a response")}
    try:
        sockets["stalled body"].sendall(b"POST /recommendations HTTP/1.1\r\nhost: x\r\n"
                                        b"content-type: application/json\r\ncontent-length: 100\r\n\r\n{")
        sockets["idle after a response"].sendall(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
        slow = b"GET /healthz HTTP/1.1\r\nhost: x\r\nx-slow: " + b"a" * 1000
        limit = max(HEADER_TIMEOUT_S, BODY_IDLE_S, KEEP_ALIVE_S)
        result = _watch_until_closed(sockets, limit + 10, {"slow headers": slow})
    finally:
        for sock in sockets.values():
            sock.close()
    for name, (seconds, _) in result.items():
        assert seconds is not None, f"{name}: still open after {limit + 10} s"
    assert result["idle"][0] <= HEADER_TIMEOUT_S + 3 and result["idle"][1] == b""
    assert result["slow headers"][0] <= HEADER_TIMEOUT_S + 3
    assert result["slow headers"][1].startswith(b"HTTP/1.1 408 ")
    assert result["stalled body"][0] <= BODY_IDLE_S + 3
    assert result["stalled body"][1].startswith(b"HTTP/1.1 408 ")
    assert result["idle after a response"][1].startswith(b"HTTP/1.1 200 ")
    assert served.http.get("/healthz").status_code == 200  # the server itself is fine


def test_a_body_that_trickles_past_its_deadline_is_cut(serving) -> None:
    """A body that never pauses long enough for the idle limit still has to arrive within the
    body deadline (here 3 s, with short limits): one byte every 0.25 s is answered 408 and closed.
    A request within the limits is served on the same kind of server."""
    app = create_app(serving.manager, serving.db, manage_lifecycle=False)
    with ServerThread(app, http=with_timeouts(2.0, 1.0, 3.0)) as server:
        sock = socket.create_connection(("127.0.0.1", server.port))
        try:
            sock.sendall(b"POST /recommendations HTTP/1.1\r\nhost: x\r\n"
                         b"content-type: application/json\r\ncontent-length: 1000\r\n\r\n")
            (seconds, data), = _watch_until_closed({"body": sock}, 10, {"body": b" " * 1000}).values()
        finally:
            sock.close()
        assert seconds is not None and 2.5 <= seconds <= 5, seconds
        assert data.startswith(b"HTTP/1.1 408 ")
        with httpx.Client(base_url=server.url, timeout=30) as http:
            assert http.get("/healthz").status_code == 200
