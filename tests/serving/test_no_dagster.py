"""The serving package runs without Dagster (issue 8): the API process needs the registry, the blob
store and `recvae`, not the orchestrator. Checked in a fresh interpreter, where nothing else has
imported dagster yet."""

from __future__ import annotations

import subprocess
import sys

from batchrec_dagster.settings import PROJECT_ROOT

PROBE = """
import importlib, pkgutil, sys
import batchrec_dagster.serving as serving
names = [m.name for m in pkgutil.walk_packages(serving.__path__, "batchrec_dagster.serving.")]
for name in names:
    importlib.import_module(name)
import batchrec_dagster.cli.commands  # `batchrec serve` goes through the CLI's parser

from batchrec_dagster.sources.mongo import connect
from batchrec_dagster.serving.api.app import create_app
from batchrec_dagster.serving.model.manager import ModelManager
from batchrec_dagster.storage.blobs import LocalBlobStore
db = connect("mongodb://127.0.0.1:9/?directConnection=true", connect=False)["x"]
create_app(ModelManager(db, LocalBlobStore(sys.argv[1]), poll_seconds=None), db)
loaded = sorted(m for m in sys.modules if m == "dagster" or m.startswith(("dagster.", "dagster_")))
print(len(names), "modules;", "dagster modules:", loaded)
assert not loaded, loaded
"""


def test_the_serving_package_imports_and_builds_its_app_without_dagster(tmp_path) -> None:
    out = subprocess.run([sys.executable, "-c", PROBE, str(tmp_path)], capture_output=True, text=True,
                         cwd=PROJECT_ROOT, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "dagster modules: []" in out.stdout
    assert int(out.stdout.split()[0]) >= 8  # the walk found the package's modules
