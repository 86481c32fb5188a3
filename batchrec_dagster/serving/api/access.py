"""Who may call the API: optional API keys, a per-key rate limit, and the bind rule.

Keys are configured as sha256 hashes (`BATCHREC_API_KEYS`, settings.py); a request sends the key
itself in `X-API-Key` (or `Authorization: Bearer <key>`, for Prometheus' scrape config), and the
server compares the key's sha256 with the configured ones. The plaintext key is never stored.
Each key has a token bucket (`BATCHREC_API_RATE_LIMIT` per second, `BATCHREC_API_RATE_BURST`
at once); an empty bucket answers 429 with `Retry-After`. The buckets live in a small file
mapped into every worker process, so the limit holds per key across workers, not per worker.

Without keys the server must listen on loopback only (`check_bind`), unless told otherwise.
"""

from __future__ import annotations

import fcntl
import hashlib
import ipaddress
import math
import mmap
import os
import secrets
import struct
import threading
import time
from pathlib import Path

from batchrec_dagster.serving.api.docs_ui import ASSET_PATHS

# probes, the page's static HTML and the API docs need no key (the page asks for one itself)
OPEN_PATHS = frozenset({"/healthz", "/readyz", "/", "/docs", "/openapi.json", *ASSET_PATHS})
_SLOT = struct.Struct("dd")  # tokens, monotonic time of the last update


class TokenBuckets:
    """One token bucket per slot, in shared memory: an anonymous map (one process) or a file that
    every worker maps (`path`), locked with fcntl across processes."""

    def __init__(self, slots: int, rate: float, burst: int, path: str | Path | None = None):
        self.rate = rate
        self.burst = float(burst)
        size = max(1, slots) * _SLOT.size
        self._fd: int | None = None
        if path is None:
            self._map = mmap.mmap(-1, size)
        else:
            self._fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
            if os.fstat(self._fd).st_size < size:
                os.ftruncate(self._fd, size)  # zeros: every bucket starts full (see take)
            self._map = mmap.mmap(self._fd, size)
        self._lock = threading.Lock()

    def take(self, slot: int) -> float:
        """Take one token: 0.0 if the request may go, else the seconds until a token is there."""
        if self.rate <= 0:
            return 0.0
        offset = slot * _SLOT.size
        with self._lock:
            if self._fd is not None:
                fcntl.lockf(self._fd, fcntl.LOCK_EX, _SLOT.size, offset)
            try:
                tokens, stamp = _SLOT.unpack_from(self._map, offset)
                now = time.monotonic()  # CLOCK_MONOTONIC: one clock for all processes of the machine
                tokens = self.burst if stamp == 0.0 else min(self.burst, tokens + (now - stamp) * self.rate)
                wait = 0.0 if tokens >= 1.0 else (1.0 - tokens) / self.rate
                _SLOT.pack_into(self._map, offset, tokens - 1.0 if wait == 0.0 else tokens, now)
            finally:
                if self._fd is not None:
                    fcntl.lockf(self._fd, fcntl.LOCK_UN, _SLOT.size, offset)
        return wait

    def close(self) -> None:
        self._map.close()
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class AccessPolicy:
    """API keys (by sha256) and their rate limit. `required` is False when no key is configured."""

    def __init__(self, key_hashes: dict[str, str], rate: float = 0.0, burst: int = 1,
                 buckets_path: str | Path | None = None):
        self.key_hashes = dict(key_hashes)
        self.required = bool(key_hashes)
        names = sorted(set(key_hashes.values()))
        self._slot = {name: i for i, name in enumerate(names)}
        self.rate = rate
        self.buckets = TokenBuckets(len(names), rate, burst, buckets_path) if self.required else None

    def key_name(self, headers: list[tuple[bytes, bytes]]) -> str | None:
        """The name of the key the request sent, None if it sent none or an unknown one."""
        sent = None
        for name, value in headers:
            if name == b"x-api-key":
                sent = value.strip()
            elif name == b"authorization" and value[:7].lower() == b"bearer " and sent is None:
                sent = value[7:].strip()
        if not sent:
            return None
        # the lookup is on the hash of what was sent, so its timing says nothing about the keys
        return self.key_hashes.get(hashlib.sha256(sent).hexdigest())

    def retry_after(self, key: str) -> int | None:
        """None when the key may send this request, else whole seconds to wait (>= 1)."""
        assert self.buckets is not None
        wait = self.buckets.take(self._slot[key])
        return None if wait == 0.0 else max(1, math.ceil(wait))


def new_api_key(name: str) -> tuple[str, str]:
    """A fresh random key and its settings entry (`name:sha256`)."""
    key = secrets.token_urlsafe(32)
    return key, f"{name}:{hashlib.sha256(key.encode()).hexdigest()}"


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


def check_bind(host: str, keys_configured: bool, allow_without_keys: bool) -> str | None:
    """Why the server must not listen on `host` (None: it may)."""
    if keys_configured or allow_without_keys or is_loopback(host):
        return None
    return (f"refusing to listen on {host!r} without API keys: anyone who can reach it could use the "
            "API. Set BATCHREC_API_KEYS (docs/serving.md, Access), listen on 127.0.0.1, or pass "
            "--allow-without-keys if something in front of the server controls access.")
