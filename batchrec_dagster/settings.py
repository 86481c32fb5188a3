"""Deployment settings: the one place that decides between `local` and `prod`.

`BATCHREC_DEPLOYMENT=local` (default) needs no cloud account and no Docker: artifacts live under
`BATCHREC_HOME` (default `<project>/.batchrec`) and MongoDB is an embedded nx-27017 server started
on demand unless `MONGODB_URI` is set. `prod` reads `MONGODB_URI`, `GCS_BUCKET` and Google
credentials (Application Default Credentials) from the environment.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
PARTITION_TIMEZONE = "Asia/Seoul"
DEFAULT_PARTITIONS_START = "2026-01-01-00:00"
DEFAULT_DATABASE = "batchrec"
DEFAULT_EMBEDDED_MONGO_PORT = 27117
DEPLOYMENTS = ("local", "prod")


class SettingsError(RuntimeError):
    """A required setting is missing or invalid."""


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
