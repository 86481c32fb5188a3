"""`batchrec serve --workers 2` maps one verified local copy of the artifact in both workers (the
weights are the page cache's pages, shared, not a copy per process): both processes' memory maps
name the same file, the same inode, whose bytes are the registry entry's."""

from __future__ import annotations

import hashlib
from pathlib import Path

from batchrec_dagster.localstack.processes import is_running
from tests.harness.serving import publish, wait_for
from tests.harness.serving_processes import ServeProcess, serve_env, store_for


def _mapped(pid: int, folder: Path) -> set[tuple[str, str]]:
    """(inode, path) of the files under `folder` that process `pid` maps."""
    found = set()
    for line in Path(f"/proc/{pid}/maps").read_text().splitlines():
        fields = line.split(maxsplit=5)
        if len(fields) == 6 and fields[5].startswith(str(folder)):
            found.add((fields[4], fields[5]))
    return found


def _serving(serve: ServeProcess, model_id: str) -> set[int]:
    """The pids of the two workers, once both have said (in /model) that they serve `model_id`."""
    pids: set[int] = set()

    def both() -> bool:
        serve.check_running()
        body = serve.get("/model").json()  # a new connection: the kernel picks a worker
        if (body["model"] or {}).get("id") == model_id:
            pids.add(body["worker"]["pid"])
        return len(pids) == 2

    wait_for(both, 120, "both workers serving the model")
    return pids


def test_two_workers_map_the_same_verified_weights_file(mongo_server_uri, mongo_db, tmp_path: Path) -> None:
    env = serve_env(mongo_server_uri, mongo_db.name, tmp_path / "home")
    cache = tmp_path / "home" / "serving-cache"
    entry = publish(mongo_db, store_for(env), score=0.2, seed=1)
    with ServeProcess(env, "--workers", "2", "--poll-seconds", "2", "--drain-seconds", "1",
                      "--log-level", "warning", log=tmp_path / "serve.log") as serve:
        serve.wait_ready()
        workers = _serving(serve, str(entry["_id"]))
        serve.workers |= workers
        maps = [_mapped(pid, cache) for pid in workers]
        assert maps[0] and maps[0] == maps[1], maps  # one file, one inode, in both processes
        (inode, path), = maps[0]
        assert Path(path) == cache / f"{entry['sha256']}.safetensors"
        assert hashlib.sha256(Path(path).read_bytes()).hexdigest() == entry["sha256"]
        assert Path(path).stat().st_ino == int(inode)
        assert serve.terminate() == 0
    assert not any(is_running(pid) for pid in workers)
