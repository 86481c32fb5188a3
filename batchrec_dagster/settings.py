"""Deployment settings: the one place that decides between `local` and `prod`.

`BATCHREC_DEPLOYMENT=local` (default) needs no cloud account and no Docker: artifacts live under
`BATCHREC_HOME` (default `<project>/.batchrec`) and MongoDB is an embedded nx-27017 server started
on demand unless `MONGODB_URI` is set. `prod` reads `MONGODB_URI`, `GCS_BUCKET` and Google
credentials (Application Default Credentials) from the environment.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

PROJECT_ROOT = Path(__file__).resolve().parent.parent
PARTITION_TIMEZONE = "Asia/Seoul"
DEFAULT_PARTITIONS_START = "2026-01-01-00:00"
DEFAULT_DATABASE = "batchrec"
DEFAULT_EMBEDDED_MONGO_PORT = 27117
DEPLOYMENTS = ("local", "prod")
N = TypeVar("N", int, float)


class SettingsError(RuntimeError):
    """A required setting is missing or invalid."""


def env_number(name: str, default: N, *, kind: type[N], minimum: N | None = None,
               maximum: N | None = None, environ: Mapping[str, str] | None = None) -> N:
    """A number from the environment (`default` when unset or blank); a clear ValueError otherwise."""
    env = os.environ if environ is None else environ
    raw = (env.get(name) or "").strip()
    if not raw:
        return default
    try:
        value = kind(raw)
    except ValueError:
        noun = "a whole number" if kind is int else "a number"
        raise ValueError(f"{name}={raw!r} is not {noun}") from None
    if minimum is not None and value < minimum:
        raise ValueError(f"{name}={raw} must be at least {minimum}")
    if maximum is not None and value > maximum:
        raise ValueError(f"{name}={raw} must be at most {maximum}")
    return value


@dataclass(frozen=True)
class Settings:
    deployment: str
    home: Path
    mongodb_uri: str | None
    database: str
    gcs_bucket: str | None
    gcs_prefix: str
    embedded_mongo_port: int
    partitions_start: str

    @property
    def artifacts_dir(self) -> Path:
        return self.home / "storage"

    @property
    def mongo_data_dir(self) -> Path:
        return self.home / "mongo"


def load_settings(environ: dict[str, str] | None = None) -> Settings:
    env = os.environ if environ is None else environ
    deployment = env.get("BATCHREC_DEPLOYMENT", "local").strip().lower() or "local"
    if deployment not in DEPLOYMENTS:
        raise SettingsError(
            f"BATCHREC_DEPLOYMENT={deployment!r} is not one of {', '.join(DEPLOYMENTS)}"
        )
    settings = Settings(
        deployment=deployment,
        home=Path(env.get("BATCHREC_HOME") or PROJECT_ROOT / ".batchrec").resolve(),
        mongodb_uri=env.get("MONGODB_URI") or None,
        database=env.get("MONGODB_DATABASE") or DEFAULT_DATABASE,
        gcs_bucket=env.get("GCS_BUCKET") or None,
        gcs_prefix=(env.get("GCS_PREFIX") or "batchrec").strip("/"),
        embedded_mongo_port=int(env.get("BATCHREC_MONGO_PORT") or DEFAULT_EMBEDDED_MONGO_PORT),
        partitions_start=env.get("BATCHREC_PARTITIONS_START") or DEFAULT_PARTITIONS_START,
    )
    if deployment == "prod":
        missing = [name for name, value in
                   (("MONGODB_URI", settings.mongodb_uri), ("GCS_BUCKET", settings.gcs_bucket))
                   if not value]
        if missing:
            raise SettingsError(f"deployment 'prod' needs {', '.join(missing)} in the environment")
    return settings
