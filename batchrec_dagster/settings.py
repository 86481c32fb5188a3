"""Every setting of batchrec, in one typed object read from the environment once per process.

`get_settings()` is the only way code reads configuration: no other module looks at `os.environ`.
It is read when first asked for (the code location, the CLI and the server each ask once at
start), so a changed variable takes effect when the process or the code location is (re)loaded.
An invalid value stops the process with one clear line per bad variable (`SettingsError`).

docs/settings.md lists every variable; `batchrec settings` prints the values in force.
(Over 300 lines on purpose: it is the one table of every setting, kept in one place.)
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import AliasChoices, Field, ValidationError, ValidationInfo, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from batchrec_dagster.registry.defaults import MAX_MODEL_AGE_HOURS, TIE_TOLERANCE, SelectionPolicy

PROJECT_ROOT = Path(__file__).resolve().parent.parent
PARTITION_TIMEZONE = "Asia/Seoul"
PARTITION_KEY_FORMAT = "%Y-%m-%d-%H:%M"


class SettingsError(RuntimeError):
    """A required setting is missing or invalid."""


def _env(name: str, description: str, default: Any = None, **constraints: Any) -> Any:
    """A field read from the environment variable `name` (the names are the documented ones)."""
    return Field(default, validation_alias=AliasChoices(name), description=description, **constraints)


class Settings(BaseSettings):
    """The deployment, its services and the pipeline's thresholds (docs/settings.md)."""

    model_config = SettingsConfigDict(frozen=True, extra="ignore", env_ignore_empty=True,
                                      case_sensitive=True)

    # -- deployment and services
    deployment: Literal["local", "prod"] = _env(
        "BATCHREC_DEPLOYMENT", "`local`: embedded MongoDB and a local folder; `prod`: MONGODB_URI and GCS.",
        "local")
    home: Path = _env("BATCHREC_HOME", "local state: embedded MongoDB data, asset values, artifacts.",
                      PROJECT_ROOT / ".batchrec")
    mongodb_uri: str | None = Field(None, validation_alias=AliasChoices("MONGODB_URI"), repr=False,
                                    description="MongoDB connection string (may hold a password).")
    mongodb_database: str = _env("MONGODB_DATABASE", "database of the source and registry collections.",
                                 "batchrec", min_length=1)
    mongo_port: int = _env("BATCHREC_MONGO_PORT", "port of the embedded MongoDB (local, no MONGODB_URI).",
                           27117, ge=1, le=65535)
    gcs_bucket: str | None = _env("GCS_BUCKET", "bucket for artifacts and asset values (prod).")
    gcs_prefix: str = _env("GCS_PREFIX", "object prefix inside the bucket.", "batchrec")
    google_cloud_project: str | None = _env("GOOGLE_CLOUD_PROJECT", "project of the GCS client (prod).")
    dagster_home: Path | None = _env("DAGSTER_HOME",
                                     "Dagster instance folder (default BATCHREC_HOME/dagster_home).")

    # -- pipeline
    partitions_start: str = _env("BATCHREC_PARTITIONS_START", "first hourly partition (KST).",
                                 "2026-01-01-00:00")
    source_layout: Literal["stars", "embedded"] = _env(
        "BATCHREC_SOURCE_LAYOUT", "`stars` collection, or the older `star_user_list` in repositories.",
        "stars")
    min_matrix_users: int = _env("BATCHREC_MIN_MATRIX_USERS", "matrix check: fewest users.", 10, ge=1)
    min_matrix_items: int = _env("BATCHREC_MIN_MATRIX_ITEMS", "matrix check: fewest repositories.", 10, ge=1)
    max_matrix_items: int = _env("BATCHREC_MAX_MATRIX_ITEMS", "matrix check: most repositories.",
                                 200_000, ge=1)
    max_matrix_density: float = _env("BATCHREC_MAX_MATRIX_DENSITY", "matrix check: highest density.",
                                     0.5, gt=0, le=1)
    min_score_margin: float = _env("BATCHREC_MIN_SCORE_MARGIN",
                                   "the model must beat popularity's NDCG@100 by more than this.", 0.0)
    full_run_hour: int = _env("BATCHREC_FULL_RUN_HOUR",
                              "KST hour whose run re-reads every star and retrains from scratch "
                              "(other hours read their hour and warm-start).", 4, ge=0, le=23)

    # -- automation
    schedule_minute_offset: int = _env("BATCHREC_SCHEDULE_MINUTE_OFFSET",
                                       "minute of each KST hour at which the schedule fires.", 5, ge=0, le=59)
    evaluation_minute_offset: int = _env(
        "BATCHREC_EVALUATION_MINUTE_OFFSET",
        "minute of each KST hour at which model_evaluation_schedule scores the closed hour.", 1, ge=0, le=59)
    new_stars_threshold: int = _env("BATCHREC_NEW_STARS_THRESHOLD",
                                    "new stars that make new_stars_sensor request a run.", 1000, ge=1)
    sensor_interval_seconds: int = _env("BATCHREC_SENSOR_INTERVAL_SECONDS",
                                        "how often new_stars_sensor evaluates.", 60, ge=5)
    run_reaper_interval_seconds: int = _env(
        "BATCHREC_RUN_REAPER_INTERVAL_SECONDS",
        "how often stale_run_reaper looks for runs whose process died.", 30, ge=5)
    freshness_hours: float = _env("BATCHREC_FRESHNESS_HOURS",
                                  "model_registry_entry fails freshness after this long without a model.",
                                  3.0, ge=1 / 60)
    retention_min_age_hours: float = _env(
        "BATCHREC_RETENTION_MIN_AGE_HOURS",
        "unreferenced artifacts younger than this are kept (must exceed the longest run).", 72.0, ge=1)
    retention_dry_run: bool | None = _env(
        "BATCHREC_RETENTION_DRY_RUN", "artifact_retention_job only reports; default: true in prod.")
    pg_bin: Path | None = _env(
        "BATCHREC_PG_BIN", "PostgreSQL binaries for `batchrec prod-stack` (default: PostgreSQL 15).")
    prod_stack_pg_dsn: str | None = Field(
        None, validation_alias=AliasChoices("BATCHREC_PROD_STACK_PG_DSN"), repr=False,
        description="`batchrec prod-stack` on this PostgreSQL (postgresql://USER:PASSWORD@HOST:PORT/DB) "
                    "instead of a local cluster.")
    score_tie_tolerance: float = _env(
        "BATCHREC_SCORE_TIE_TOLERANCE",
        "comparable scores this close to the best are a tie, which the newest model wins.",
        TIE_TOLERANCE, ge=0, lt=1)
    training_device: str | None = _env(
        "BATCHREC_TRAINING_DEVICE",
        "`cpu`, `cuda` or `cuda:N` for recvae_model (default: CUDA when present); "
        "`cuda` also makes training runs ask Kubernetes for a GPU node.")
    model_max_age_hours: float = _env("BATCHREC_MODEL_MAX_AGE_HOURS",
                                      "models trained on data older than this are never served.",
                                      MAX_MODEL_AGE_HOURS, gt=0)

    # -- serving (docs/serving.md)
    api_keys: str | None = Field(
        None, validation_alias=AliasChoices("BATCHREC_API_KEYS"), repr=False,
        description="API keys the server accepts, as comma-separated `name:sha256-hex-of-the-key` "
                    "(hashes only; `batchrec serve --new-api-key NAME` makes one). Unset: no keys, "
                    "loopback only.")
    api_rate_limit: float = _env("BATCHREC_API_RATE_LIMIT",
                                 "requests per second allowed per API key (0: no limit).", 50.0, ge=0)
    api_rate_burst: int = _env("BATCHREC_API_RATE_BURST",
                               "requests a key may send at once beyond its rate.", 100, ge=1)
    cors_origins: str | None = _env(
        "BATCHREC_CORS_ORIGINS", "comma-separated origins allowed to call the API from a browser "
        "(`chrome-extension://<id>`, `https://host`).")
    drain_seconds: float = _env("BATCHREC_DRAIN_SECONDS",
                                "after SIGTERM: /readyz 503 at once, new connections refused after this.",
                                5.0, ge=0, le=600)
    ann_min_items: int = _env(
        "BATCHREC_ANN_MIN_ITEMS", "models with at least this many repositories are served from an "
        "approximate top-k index, smaller ones exactly (docs/serving.md has the measurement).",
        50_000, ge=1)
    ann_index_kind: Literal["auto", "hnsw", "ivf", "ivfpq", "flat"] = _env(
        "BATCHREC_ANN_INDEX", "the approximate top-k index: `auto` (faiss HNSW below 100,000 "
        "repositories, `ivfpq` from there: docs/serving.md), `hnsw`, `ivf` (IVF-Flat), `ivfpq` (IVF "
        "with 4-bit PQ fast-scan codes and exact re-ranking), or "
        "`flat` (exact, for tests).", "auto")
    ann_ef_search: int = _env("BATCHREC_ANN_EF_SEARCH", "HNSW query beam width (recall against speed).",
                              128, ge=1)
    ann_nprobe: int = _env("BATCHREC_ANN_NPROBE", "IVF lists searched per query (of about "
                           "2*sqrt(repositories); `ivf` and `ivfpq`).", 192, ge=1)
    ann_min_recall: float = _env(
        "BATCHREC_ANN_MIN_RECALL", "blocking check: the index's recall@k against exact scoring on "
        "held-out users must reach this.", 0.98, ge=0, le=1)
    ann_recall_k: int = _env("BATCHREC_ANN_RECALL_K", "k of the index's recall check.", 20, ge=1)
    serve_cache: Path | None = _env(
        "BATCHREC_SERVE_CACHE", "folder of the verified local copies of served artifacts and indexes "
        "that `batchrec serve`'s workers map and share (default BATCHREC_HOME/serving-cache).")
    serve_challenger: bool = _env("BATCHREC_SERVE_CHALLENGER",
                                  "the server also loads the best challenger, for the page's "
                                  "side-by-side (twice the model memory).", True)

    @field_validator("deployment", "source_layout", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("training_device")
    @classmethod
    def _device(cls, value: str | None) -> str | None:
        if value is None:
            return None
        value = value.strip().lower()
        if value != "cpu" and value != "cuda" and not (value.startswith("cuda:") and value[5:].isdigit()):
            raise ValueError("must be cpu, cuda or cuda:N")
        return value

    @field_validator("gcs_prefix")
    @classmethod
    def _strip_slashes(cls, value: str) -> str:
        return value.strip("/")

    @field_validator("home", "dagster_home", "serve_cache")
    @classmethod
    def _absolute(cls, value: Path | None) -> Path | None:
        return value.expanduser().resolve() if value is not None else None

    @field_validator("partitions_start")
    @classmethod
    def _partition_key(cls, value: str) -> str:
        try:
            datetime.strptime(value, PARTITION_KEY_FORMAT)
        except ValueError:
            raise ValueError(f"must look like 2026-01-01-00:00 ({PARTITION_KEY_FORMAT})") from None
        return value

    @field_validator("api_keys", "cors_origins")
    @classmethod
    def _parsable_list(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is not None:  # checked at start: a bad entry stops the server with its reason
            (parse_api_keys if info.field_name == "api_keys" else parse_origins)(value)
        return value

    @property
    def api_key_hashes(self) -> dict[str, str]:
        """sha256 hex of each accepted key -> the key's name (empty: no keys configured)."""
        return parse_api_keys(self.api_keys) if self.api_keys else {}

    @property
    def cors_origin_list(self) -> list[str]:
        return parse_origins(self.cors_origins) if self.cors_origins else []

    @model_validator(mode="after")
    def _prod_needs_services(self) -> Settings:
        if self.deployment == "prod":
            missing = [name for name, value in (("MONGODB_URI", self.mongodb_uri),
                                                ("GCS_BUCKET", self.gcs_bucket)) if not value]
            if missing:
                raise ValueError(f"deployment 'prod' needs {', '.join(missing)} in the environment")
        return self

    @property
    def read_from_environment(self) -> bool:
        """The values came from the process environment, so a process started with the same
        environment (a Dagster run) can read a secret by its variable's name (dg.EnvVar)."""
        return True

    def selection_policy(self, max_age_hours: float | None = None) -> SelectionPolicy:
        """What the registry chooses the champion and the served model by; `max_age_hours` (a
        command's --max-age-hours) replaces BATCHREC_MODEL_MAX_AGE_HOURS when given."""
        hours = self.model_max_age_hours if max_age_hours is None else max_age_hours
        return SelectionPolicy.of(hours, self.score_tie_tolerance)

    # -- derived paths
    @property
    def retention_reports_only(self) -> bool:
        return self.retention_dry_run if self.retention_dry_run is not None else self.deployment == "prod"

    @property
    def artifacts_dir(self) -> Path:
        return self.home / "storage"

    @property
    def serve_cache_dir(self) -> Path:
        return self.serve_cache or self.home / "serving-cache"

    @property
    def mongo_data_dir(self) -> Path:
        return self.home / "mongo"

    @property
    def dagster_home_dir(self) -> Path:
        return self.dagster_home or self.home / "dagster_home"

    @classmethod
    def settings_customise_sources(cls, settings_cls, init_settings, env_settings, dotenv_settings,
                                   file_secret_settings):  # noqa: ANN001, ANN206 - pydantic's hook
        # the environment only: no .env file or secrets folder is read behind the operator's back
        return (init_settings, env_settings)


_KEY_ENTRY = re.compile(r"^([A-Za-z0-9_.-]{1,64}):([0-9a-fA-F]{64})$")
_ORIGIN = re.compile(r"^(https?|chrome-extension|moz-extension)://[A-Za-z0-9.-]+(:[0-9]{1,5})?$")


def parse_api_keys(value: str) -> dict[str, str]:
    """`name:sha256hex, ...` -> {sha256hex: name}. Plaintext keys are refused: the setting holds
    only hashes, so a leaked environment or config does not leak a usable key."""
    hashes: dict[str, str] = {}
    for item in (part.strip() for part in value.split(",")):
        if not item:
            continue
        match = _KEY_ENTRY.match(item)
        if match is None:
            raise ValueError("each entry must be NAME:SHA256 (64 hex digits of the key's sha256; "
                             "`batchrec serve --new-api-key NAME` prints one), not a plaintext key")
        name, digest = match.group(1), match.group(2).lower()
        if name in hashes.values() or digest in hashes:
            raise ValueError(f"key {name!r} is listed twice")
        hashes[digest] = name
    if not hashes:
        raise ValueError("no key listed (leave it unset for none)")
    return hashes


def parse_origins(value: str) -> list[str]:
    """Exact origins (scheme://host[:port], no path, no wildcard)."""
    origins = [part.strip() for part in value.split(",") if part.strip()]
    bad = [origin for origin in origins if not _ORIGIN.match(origin)]
    if bad:
        raise ValueError(f"{', '.join(map(repr, bad))}: an origin is scheme://host[:port] with scheme http, "
                         "https, chrome-extension or moz-extension, no path, no trailing slash, no *")
    return origins


class _MappingSettings(Settings):
    """Settings from an explicit mapping (tests, `--deployment`): the process environment is ignored."""

    @property
    def read_from_environment(self) -> bool:
        return False

    @classmethod
    def settings_customise_sources(cls, settings_cls, init_settings, env_settings, dotenv_settings,
                                   file_secret_settings):  # noqa: ANN001, ANN206
        return (init_settings,)


def env_names() -> dict[str, str]:
    """Field name -> environment variable, for docs and `batchrec settings`."""
    return {name: field.validation_alias.choices[0] for name, field in Settings.model_fields.items()}


def _explain(exc: ValidationError) -> SettingsError:
    names = env_names()
    lines = []
    for error in exc.errors():
        field = str(error["loc"][0]) if error["loc"] else ""
        variable = names.get(field, field)
        value = error.get("input")
        # a password, or a key pasted by mistake (errors name the field or its variable)
        secret = variable in ("MONGODB_URI", "BATCHREC_API_KEYS") or field in ("mongodb_uri", "api_keys")
        shown = "" if secret or not isinstance(value, str | int | float) else f"={value!r}"
        lines.append(f"{variable}{shown}: {error['msg']}" if variable else error["msg"].removeprefix(
            "Value error, "))
    return SettingsError("invalid settings: " + "; ".join(lines))


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Settings from the process environment, or from `environ` alone when it is given."""
    try:
        if environ is None:
            return Settings()
        known = set(env_names().values())
        return _MappingSettings(**{k: v for k, v in environ.items() if k in known and v.strip()})
    except ValidationError as exc:
        raise _explain(exc) from None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The settings of this process, read once."""
    return load_settings()


def override_for_process(**variables: str) -> Settings:
    """Replace variables for this process and the processes it starts (`batchrec --deployment`),
    then read the settings again."""
    candidate = load_settings({**os.environ, **variables})  # validate before changing anything
    os.environ.update(variables)
    get_settings.cache_clear()
    return candidate


def child_environment(**overrides: str) -> dict[str, str]:
    """The environment for a process we start (dagster, PostgreSQL tools): ours, plus `overrides`."""
    return {**os.environ, **overrides}


def prefer_passive_openmp_waiting() -> None:
    """Must run before torch starts OpenMP. With the default (active) waiting, torch's idle threads
    spin, and training on a machine shared with the webserver, the daemon or the serving API ran
    3-5x slower (benchmarks/results/recvae.md); passive waiting costs nothing measurable alone."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
