"""Incremental hours: hour H+1 extends hour H's snapshot with only its own stars (real MongoDB,
real storage), and falls back to a full read when it cannot."""

import logging
from datetime import datetime, timedelta
from pathlib import Path

import dagster as dg
import numpy as np
import pytest

from batchrec_dagster.defs.assets import raw_repositories
from batchrec_dagster.defs.definitions import build_definitions
from batchrec_dagster.defs.deployments import build_resources
from batchrec_dagster.defs.partitions import daily_full_run, hourly_partitions, partition_window
from batchrec_dagster.settings import Settings, load_settings
from batchrec_dagster.sources.collections import ensure_source_indexes
from batchrec_dagster.sources.demo_data import generate_demo, load_demo
from batchrec_dagster.sources.partition_reads import read_hour, read_raw_repositories
from batchrec_dagster.sources.snapshot import plan_read, source_fingerprint
from batchrec_dagster.storage.codec import decode, encode
from tests.harness.deployments import TINY_DEMO

H, H1, H2, H3 = "2026-03-01-20:00", "2026-03-01-21:00", "2026-03-01-22:00", "2026-03-01-23:00"   # KST
START, END = partition_window(H)
END1, END2 = partition_window(H1)[1], partition_window(H2)[1]


def columns(raw) -> list[tuple]:
    return sorted(zip(raw.star_user_ids.tolist(), raw.star_repo_ids.tolist(),
                      raw.starred_at.astype("int64").tolist(), strict=True))


def orphans(raw) -> list[tuple]:
    return sorted(zip(raw.orphan_user_ids.tolist(), raw.orphan_repo_ids.tolist(), strict=True))


def test_next_hour_extends_the_snapshot_exactly_as_a_full_read_would(mongo_db):
    db = mongo_db
    db.repositories.insert_many([{"_id": i, "full_name": f"o/r{i}", "stars": 50} for i in (1, 2)]
                                + [{"_id": "bad", "full_name": "o/bad", "stars": 5}])
    t = END - timedelta(minutes=30)
    db.stars.insert_many([
        {"user_id": 10, "repo_id": 1, "starred_at": t - timedelta(days=2)},
        {"user_id": 10, "repo_id": 2, "starred_at": t},
        {"user_id": 11, "repo_id": 3, "starred_at": t},                      # repository not known yet
        {"user_id": "x", "repo_id": 1, "starred_at": t},                     # malformed
        {"user_id": 12, "repo_id": 1, "starred_at": "yesterday"},            # malformed time
        {"user_id": 13, "repo_id": 1, "starred_at": END + timedelta(minutes=5)},   # next hour's
    ])
    ensure_source_indexes(db, unique=False)
    fingerprint = "f" * 16
    snapshot = read_raw_repositories(db, START, END, fingerprint=fingerprint)
    assert snapshot.read_mode == "full" and snapshot.stars_read == 6 and snapshot.stars_after_window == 1
    assert orphans(snapshot) == [(11, 3)] and snapshot.skipped["star_unknown_repo"] == 1

    # the next hour: the catalogue learns repository 3 and loses 2; new stars, a duplicate, junk
    db.repositories.insert_one({"_id": 3, "full_name": "o/r3", "stars": 70})
    db.repositories.delete_one({"_id": 2})
    u = END + timedelta(minutes=20)
    db.stars.insert_many([
        {"user_id": 10, "repo_id": 1, "starred_at": u},                      # same pair, later: dropped
        {"user_id": 14, "repo_id": 3, "starred_at": u},
        {"user_id": 15, "repo_id": 9, "starred_at": u},                      # unknown repository
        {"user_id": 16, "repo_id": 1.5, "starred_at": u},                    # malformed
        {"user_id": 17, "repo_id": 1, "starred_at": END1},                   # the hour after
    ])
    hour = read_hour(db, decode(encode(snapshot)), END, END1, fingerprint=fingerprint)
    full = read_raw_repositories(db, END, END1, fingerprint=fingerprint)

    # only the hour's documents were fetched: the five of [END, END1), not the eleven in total
    assert hour.stars_read == 5 and full.stars_read == 11
    assert hour.read_mode == "incremental" and hour.stars_after_window is None
    assert columns(hour) == columns(full)
    assert orphans(hour) == orphans(full) == [(10, 2), (15, 9)]   # repository 2 left the catalogue
    assert hour.skipped == full.skipped == {
        "repository_bad_id": 1, "star_bad_repo_id": 1, "star_bad_starred_at": 1, "star_bad_user_id": 1,
        "star_duplicate": 1, "star_unknown_repo": 2}
    assert hour.repo_ids.tolist() == full.repo_ids.tolist() == [1, 3]
    assert hour.window_start == END and hour.window_end == END1


def test_plan_read_falls_back_to_a_full_read_when_it_must():
    fp = source_fingerprint(layout="stars", database="batchrec", uri="mongodb://u:secret@h1:1,h2:2/x",
                            embedded_data_dir=None)
    # hosts in any order and other credentials: the same source; another database is not
    assert fp == source_fingerprint(layout="stars", database="batchrec", uri="mongodb://v:other@h2:2,h1:1/x",
                                    embedded_data_dir=None)
    assert fp != source_fingerprint(layout="stars", database="other", uri="mongodb://h1:1,h2:2/x",
                                    embedded_data_dir=None)
    assert fp != source_fingerprint(layout="embedded", database="batchrec", uri="mongodb://h1:1,h2:2/x",
                                    embedded_data_dir=None)

    class Previous:
        source_fingerprint, window_end, read_mode, star_user_ids = fp, END, "full", np.zeros(3)

    def plan(previous=Previous, **kw):
        args = {"window_start": END, "layout": "stars", "fingerprint": fp, "requested": "auto",
                "daily_full": None} | kw
        return plan_read(previous, **args)

    assert plan().mode == "incremental"
    assert plan(None).reason == "no snapshot of the previous hour"
    assert plan(requested="full").reason == "asked in run config (read: full)"
    assert "another source" in plan(fingerprint="0" * 16).reason
    assert "not at this hour's start" in plan(window_start=END1).reason
    assert "embedded layout" in plan(layout="embedded").reason
    assert plan(daily_full="daily").mode == "full"
    assert daily_full_run("2026-03-02-04:00", 4) and daily_full_run("2026-03-02-05:00", 4) is None


# ---------------------------------------------------------------- through Dagster and the IO managers

_INSTANCE: list[dg.DagsterInstance] = []


@pytest.fixture(autouse=True)
def one_instance_per_test():
    """One Dagster instance across a test's runs, as a deployment has: values are stored per run,
    and the previous hour's snapshot is found through the instance's materialization history."""
    with dg.instance_for_test() as instance:
        _INSTANCE.append(instance)
        yield
        _INSTANCE.clear()


def materialize_raw(settings: Settings, key: str, read: str = "auto") -> dict:
    asset = raw_repositories.build(hourly_partitions(settings))
    result = dg.materialize([asset], partition_key=key, resources=build_resources(settings),
                            run_config={"ops": {"raw_repositories": {"config": {"read": read}}}},
                            instance=_INSTANCE[-1])
    assert result.success
    [event] = result.get_asset_materialization_events()
    return {k: getattr(v, "value", v) for k, v in event.materialization.metadata.items()}


def stars_between(db, start: datetime, end: datetime) -> int:
    return db.stars.count_documents({"starred_at": {"$gte": start, "$lt": end}})


def load_demo_over_the_hours(db) -> None:
    load_demo(db, TINY_DEMO, end=END2 + timedelta(hours=6))
    data = generate_demo(TINY_DEMO, END2 + timedelta(hours=6))
    assert ((data.starred_at >= np.datetime64(END.replace(tzinfo=None)))
            & (data.starred_at < np.datetime64(END1.replace(tzinfo=None)))).sum() > 5


def check_incremental_hours(settings: Settings, db) -> None:
    first = materialize_raw(settings, H)
    assert first["read_mode"] == "full" and first["read_reason"] == "no snapshot of the previous hour"
    assert first["stars_read"] == db.stars.count_documents({})

    second = materialize_raw(settings, H1)
    assert second["read_mode"] == "incremental", second["read_reason"]
    assert second["stars_read"] == stars_between(db, END, END1)          # hour H+1's stars only
    assert second["stars"] == db.stars.count_documents({"starred_at": {"$lt": END1}})
    assert second["stars_added"] == stars_between(db, END, END1)         # the demo has no duplicates
    assert second["previous_snapshot_stars"] == first["stars"]
    assert "stars_after_window" not in second


def test_the_previous_hour_is_a_declared_dependency():
    """Dagit draws raw_repositories' own previous hour as its upstream (the first hour has none:
    test_the_first_partition_reads_everything)."""
    asset = build_definitions(load_settings({})).resolve_assets_def("raw_repositories")
    key = dg.AssetKey("raw_repositories")
    assert key in asset.dependency_keys
    assert asset.get_partition_mapping(key) == dg.TimeWindowPartitionMapping(
        start_offset=-1, end_offset=-1, allow_nonexistent_upstream_partitions=True)


def test_the_first_partition_reads_everything(local_settings: Settings, mongo_db):
    load_demo_over_the_hours(mongo_db)
    settings = local_settings.model_copy(update={"partitions_start": H})
    first = materialize_raw(settings, H)
    assert (first["read_mode"], first["read_reason"]) == ("full", "the first partition has no previous hour")


def test_hour_after_hour_reads_only_its_own_stars_local(local_settings: Settings, mongo_db):
    load_demo_over_the_hours(mongo_db)
    check_incremental_hours(local_settings, mongo_db)

    # the snapshot of H+1 is gone: H+2 reads everything again
    stored = _newest_snapshot(local_settings.home, H1)  # the one per-run file
    stored.unlink()
    third = materialize_raw(local_settings, H2)
    assert third["read_mode"] == "full" and third["read_reason"] == "no snapshot of the previous hour"
    assert third["stars_read"] == mongo_db.stars.count_documents({})
    assert third["stars"] == mongo_db.stars.count_documents({"starred_at": {"$lt": END2}})

    # a snapshot that cannot be read is not extended either
    [newest] = (stored.parent.parent / H2).glob("*.npz")
    newest.write_bytes(b"not an npz")
    fourth = materialize_raw(local_settings, H3)
    assert fourth["read_mode"] == "full"
    assert fourth["read_reason"].startswith("the previous hour's snapshot is unreadable")


def _newest_snapshot(home: Path, key: str) -> Path:
    [stored] = (home / "storage" / "assets" / "raw_repositories" / key).glob("*.npz")
    return stored


def _warnings_of_last_run() -> list[str]:
    instance = _INSTANCE[-1]
    [run] = instance.get_runs(limit=1)
    return [e.user_message for e in instance.all_logs(run.run_id)
            if e.level == logging.WARNING and e.user_message]


def test_a_truncated_or_bit_flipped_snapshot_gives_a_full_read(local_settings: Settings, mongo_db):
    """Issue 18 D1: the next hour crashed with zipfile.BadZipFile (truncated) or zlib.error (a bit
    flipped) instead of the documented full read."""
    load_demo_over_the_hours(mongo_db)
    materialize_raw(local_settings, H)
    stored = _newest_snapshot(local_settings.home, H)
    data = stored.read_bytes()
    stored.write_bytes(data[:len(data) // 3])
    truncated = materialize_raw(local_settings, H1)
    assert truncated["read_mode"] == "full" and truncated["stars_read"] == mongo_db.stars.count_documents({})
    assert truncated["read_reason"].startswith("the previous hour's snapshot is unreadable: damaged")
    assert any("full read: the previous hour's snapshot is unreadable" in m for m in _warnings_of_last_run())

    stored = _newest_snapshot(local_settings.home, H1)
    flipped = bytearray(stored.read_bytes())
    flipped[len(flipped) // 2] ^= 0x10        # inside the compressed star arrays
    stored.write_bytes(bytes(flipped))
    after_flip = materialize_raw(local_settings, H2)
    assert after_flip["read_mode"] == "full"
    assert after_flip["read_reason"].startswith("the previous hour's snapshot is unreadable: damaged")
    assert after_flip["stars"] == mongo_db.stars.count_documents({"starred_at": {"$lt": END2}})


def test_full_read_when_asked_and_at_the_daily_hour(local_settings: Settings, mongo_db):
    load_demo_over_the_hours(mongo_db)
    materialize_raw(local_settings, H)
    asked = materialize_raw(local_settings, H1, read="full")
    assert (asked["read_mode"], asked["read_reason"]) == ("full", "asked in run config (read: full)")
    assert asked["stars_read"] == mongo_db.stars.count_documents({})
    daily = materialize_raw(local_settings.model_copy(update={"full_run_hour": 22}), H2)  # H2: 22:00 KST
    assert daily["read_mode"] == "full" and "daily full run at 22:00 KST" in daily["read_reason"]


@pytest.mark.slow
def test_hour_after_hour_reads_only_its_own_stars_gcs(prod_settings: Settings, gcs_client, mongo_db):
    load_demo_over_the_hours(mongo_db)
    check_incremental_hours(prod_settings, mongo_db)
    names = {b.name for b in gcs_client.bucket(prod_settings.gcs_bucket).list_blobs()}
    assert {name.rsplit("/", 1)[0] for name in names if name.endswith(".npz")} >= {
        f"batchrec/assets/raw_repositories/{k}" for k in (H, H1)}
