"""Raw-socket HTTP for the tests that need what httpx hides: a body sent chunk by chunk while the
answer is watched for, a request sent byte by byte, a connection that says nothing."""

from __future__ import annotations

import select
import socket
import time
from dataclasses import dataclass


def connect(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=30)


def readable(sock: socket.socket, timeout_s: float = 0.0) -> bool:
    return bool(select.select([sock], [], [], timeout_s)[0])


def read_status(sock: socket.socket) -> int:
    """The status code of the answer waiting on `sock` (its first line)."""
    data = b""
    while b"\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return int(data.split(b" ", 2)[1])


@dataclass
class Upload:
    status: int
    sent_bytes: int
    seconds: float


def chunked_upload(port: int, path: str, total_bytes: int, chunk: bytes = b" " * 65536) -> Upload:
    """POST `total_bytes` of chunked body, checking for an answer before each chunk: a server
    that refuses the body as it arrives answers long before the last byte is sent."""
    started = time.monotonic()
    with connect(port) as sock:
        sock.sendall(f"POST {path} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
                     f"transfer-encoding: chunked\r\n\r\n".encode())
        sent = 0
        framed = f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n"
        while sent < total_bytes and not readable(sock):
            try:
                sock.sendall(framed)
            except (BrokenPipeError, ConnectionResetError):  # refused and closed: read the answer
                break
            sent += len(chunk)
        if sent >= total_bytes:
            sock.sendall(b"0\r\n\r\n")
        return Upload(read_status(sock), sent, time.monotonic() - started)
