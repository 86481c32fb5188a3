"""The HTTP protocol the API runs on (serving/http_protocol.py): a response's head and body leave
in one write, and nothing HTTP needs is held back: a streamed head, `100 Continue`, HEAD answers,
a close right after the head."""

from __future__ import annotations

import asyncio
import socket
import threading
from typing import Any

from batchrec_dagster.serving.http_protocol import HeadWithBody, is_response_head
from tests.serving.helpers import ServerThread

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
