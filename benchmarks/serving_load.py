"""The serving benchmark's load side: closed-loop HTTP clients against 127.0.0.1 (a small asyncio
keep-alive client, or wrk when installed), the drain measurement's client, and process helpers.
Used by bench_serving.py."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

HOST = "127.0.0.1"  # the load generator targets loopback only
STARRED_PER_REQUEST = 50
K = 20
MAX_REQUESTS_PER_PHASE = 200_000


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def cpu_seconds(pid: int | None = None) -> float:
    """User + system CPU time of a process (this one by default), all threads."""
    fields = Path(f"/proc/{pid or 'self'}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def load_average() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])



def request_bytes(body: bytes) -> bytes:
    return (b"POST /recommendations HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)


# -- the load generator ----------------------------------------------------------------------------

@dataclass
class PhaseResult:
    latencies_ms: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    models: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    def summary(self) -> dict[str, Any]:
        lat = np.asarray(self.latencies_ms) if self.latencies_ms else np.zeros(1)
        return {"requests": len(self.latencies_ms), "errors": len(self.errors),
                "error_samples": self.errors[:5], "seconds": round(self.seconds, 2),
                "rps": round(len(self.latencies_ms) / self.seconds, 1) if self.seconds else 0.0,
                "p50_ms": round(float(np.percentile(lat, 50)), 3),
                "p90_ms": round(float(np.percentile(lat, 90)), 3),
                "p99_ms": round(float(np.percentile(lat, 99)), 3),
                "max_ms": round(float(lat.max()), 3), "models_seen": dict(self.models)}


async def _client(port: int, bodies: list[bytes], deadline: float, result: PhaseResult,
                  budget: list[int], offset: int) -> None:
    reader, writer = await asyncio.open_connection(HOST, port)
    try:
        i = offset
        while time.perf_counter() < deadline and budget[0] > 0:
            budget[0] -= 1
            body = bodies[i % len(bodies)]
            i += 1
            request = request_bytes(body)
            start = time.perf_counter_ns()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            payload = await reader.readexactly(length)
            elapsed = (time.perf_counter_ns() - start) / 1e6
            status = head[9:12]
            if status != b"200":
                result.errors.append(f"{status.decode()} {payload[:200]!r}")
                continue
            answer = json.loads(payload)
            if len(answer["recommendations"]) != K:
                result.errors.append(f"{len(answer['recommendations'])} recommendations, wanted {K}")
                continue
            result.latencies_ms.append(elapsed)
            model = answer["model"]["id"]
            result.models[model] = result.models.get(model, 0) + 1
    except (OSError, asyncio.IncompleteReadError) as exc:
        result.errors.append(f"connection: {exc!r}")
    finally:
        writer.close()


async def drive(port: int, inputs: list[list[int]], clients: int, seconds: float,
                during: Any = None) -> PhaseResult:
    bodies = [json.dumps({"repo_ids": ids, "k": K}).encode() for ids in inputs]
    result = PhaseResult()
    budget = [MAX_REQUESTS_PER_PHASE]
    start = time.perf_counter()
    deadline = start + seconds
    tasks = [asyncio.create_task(_client(port, bodies, deadline, result, budget, c * 97))
             for c in range(clients)]
    if during is not None:
        await asyncio.get_running_loop().run_in_executor(None, during)
    await asyncio.gather(*tasks)
    result.seconds = time.perf_counter() - start
    return result


# wrk (C, from Debian's `wrk` package) when it is installed: it spends a fraction of the Python
# client's CPU per request, which matters when the load generator shares the server's 2 cores.
# Same closed loop: each of `clients` keep-alive connections sends its next request when the
# previous answer is in. The Lua script rotates through pre-formatted requests and stops the
# thread after MAX_REQUESTS_PER_PHASE; wrk counts answers with status >= 400 as errors.
WRK_SCRIPT = """
local bodies = {%(bodies)s}
local requests = {}
local i = 0
local n = 0
function init(args)
  for j, b in ipairs(bodies) do
    requests[j] = wrk.format("POST", "/recommendations", {["Content-Type"] = "application/json"}, b)
  end
end
function request()
  n = n + 1
  if n > %(max_requests)d then wrk.thread:stop() end
  i = i %% #requests + 1
  return requests[i]
end
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('WRKJSON {"requests":%%d,"duration_us":%%d,"p50_us":%%d,"p90_us":%%d,' ..
    '"p99_us":%%d,"max_us":%%d,"connect":%%d,"read":%%d,"write":%%d,"status":%%d,"timeout":%%d}\\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.max, e.connect, e.read, e.write, e.status, e.timeout))
end
"""


GENERATORS = {
    "wrk": "wrk, one thread, a Lua script rotating 400 pre-formatted requests; errors = socket "
           "errors + answers with status >= 400",
    "python": "the asyncio keep-alive client in the benchmark process, which checks every answer",
}


def wrk_available() -> bool:
    return shutil.which("wrk") is not None


def drive_wrk(port: int, inputs: list[list[int]], clients: int, seconds: float, work: Path
              ) -> tuple[dict[str, Any], float]:
    """One wrk run (one thread, `clients` connections) against 127.0.0.1; its summary in the
    PhaseResult.summary() layout, and the CPU seconds wrk used."""
    import resource

    bodies = ",".join("'" + json.dumps({"repo_ids": ids, "k": K}, separators=(",", ":")) + "'"
                      for ids in inputs)  # JSON of integers: no quote or backslash to escape
    script = work / "bench.lua"
    script.write_text(WRK_SCRIPT % {"bodies": bodies, "max_requests": MAX_REQUESTS_PER_PHASE})
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = subprocess.run(["wrk", "-t1", f"-c{clients}", f"-d{max(1, round(seconds))}s", "--timeout", "10s",
                          "-s", str(script), f"http://{HOST}:{port}/recommendations"],
                         capture_output=True, text=True, timeout=seconds + 60, check=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    line = next((ln for ln in out.stdout.splitlines() if ln.startswith("WRKJSON ")), None)
    if line is None:
        raise RuntimeError(f"wrk printed no summary: {out.stdout[-2000:]} {out.stderr[-2000:]}")
    w = json.loads(line[len("WRKJSON "):])
    errors = w["connect"] + w["read"] + w["write"] + w["status"] + w["timeout"]
    secs = w["duration_us"] / 1e6
    ok = w["requests"] - w["status"]
    return {"requests": w["requests"], "errors": errors,
            "error_samples": [f"{k}={w[k]}" for k in ("connect", "read", "write", "status", "timeout")
                              if w[k]],
            "seconds": round(secs, 2), "rps": round(ok / secs, 1) if secs else 0.0,
            "p50_ms": round(w["p50_us"] / 1e3, 3), "p90_ms": round(w["p90_us"] / 1e3, 3),
            "p99_ms": round(w["p99_us"] / 1e3, 3), "max_ms": round(w["max_us"] / 1e3, 3),
            "models_seen": {}}, cpu


# -- processes -------------------------------------------------------------------------------------

def children_of(pid: int) -> list[int]:
    """Direct children of a process (the workers of `batchrec serve --workers N`)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(stat.parent.name))
        except (OSError, ValueError, IndexError):  # ended while we looked
            continue
    return found


# -- the drain: clients that keep going through a SIGTERM -------------------------------------------

async def _drain_client(port: int, bodies: list[bytes], records: list[tuple[float, float, str]],
                        deadline: float, offset: int) -> None:
    """Requests one after another; reconnects when the server answers `connection: close` (as it
    does while draining) or drops the connection; stops at the first refused connection."""
    i = offset
    reader = writer = None
    while time.monotonic() < deadline:
        if writer is None:
            try:
                reader, writer = await asyncio.open_connection(HOST, port)
            except ConnectionRefusedError:
                records.append((time.monotonic(), time.monotonic(), "refused"))
                return
        body = bodies[i % len(bodies)]
        i += 1
        started = time.monotonic()
        try:
            writer.write(request_bytes(body))
            head = await reader.readuntil(b"\r\n\r\n")
            length = next(int(line[15:]) for line in head.split(b"\r\n")
                          if line[:15].lower() == b"content-length:")
            await reader.readexactly(length)
            records.append((started, time.monotonic(), head[9:12].decode()))
            close = b"\r\nconnection: close" in head.lower()
        except (OSError, asyncio.IncompleteReadError) as exc:
            records.append((started, time.monotonic(), f"error {type(exc).__name__}"))
            close = True
        if close:
            writer.close()
            reader = writer = None
    if writer is not None:
        writer.close()


Record = tuple[float, float, str]  # started, ended (monotonic), status or what went wrong


async def drive_through_signal(port: int, inputs: list[list[int]], clients: int, before_s: float,
                               send_signal: Any, limit_s: float) -> tuple[list[Record], float]:
    """`clients` connections under load; `send_signal()` after `before_s`; the clients go on until
    their connections are refused (or `limit_s` after the signal). The records and the signal time."""
    bodies = [json.dumps({"repo_ids": ids, "k": K}).encode() for ids in inputs]
    records: list[tuple[float, float, str]] = []
    deadline = time.monotonic() + before_s + limit_s
    tasks = [asyncio.create_task(_drain_client(port, bodies, records, deadline, c * 97))
             for c in range(clients)]
    await asyncio.sleep(before_s)
    signalled = time.monotonic()
    send_signal()
    await asyncio.gather(*tasks)
    return records, signalled


def drain_summary(records: list[tuple[float, float, str]], signalled: float) -> dict[str, Any]:
    answered = [r for r in records if r[2] != "refused"]
    in_flight = [r for r in answered if r[0] < signalled <= r[1]]
    during = [r for r in answered if r[0] >= signalled]
    refused = [r[0] for r in records if r[2] == "refused"]
    errors = [r[2] for r in answered if r[2] != "200"]
    failed_at = sorted(round(r[0] - signalled, 3) for r in answered if r[2] != "200")
    return {"requests": len(answered), "before_signal": len(answered) - len(in_flight) - len(during),
            "in_flight_at_signal": len(in_flight),
            "in_flight_completed_200": sum(1 for r in in_flight if r[2] == "200"),
            "after_signal": len(during), "after_signal_200": sum(1 for r in during if r[2] == "200"),
            "failed": len(errors), "failure_samples": errors[:5],
            # when the failed requests were sent, in seconds after the signal
            "failed_sent_after_s": [failed_at[0], failed_at[-1]] if failed_at else None,
            "first_refused_after_s": round(min(refused) - signalled, 3) if refused else None,
            "last_answer_after_s": round(max(r[1] for r in answered) - signalled, 3) if answered else None}
