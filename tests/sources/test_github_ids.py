"""Issue 13 points 6 and 9: one id domain for the pipeline and the API, and names that cost their
own length (a 250,000-character `full_name` used to be stored at that width for every repository)."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from batchrec_dagster.sources.github_ids import (
    MAX_FULL_NAME_LENGTH,
    MAX_ID,
    is_full_name,
    is_github_id,
    string_array,
)
from batchrec_dagster.sources.partition_reads import read_raw_repositories
from batchrec_dagster.storage.codec import CodecError, decode, encode
from batchrec_dagster.storage.values import RawRepositories

START = datetime(2026, 3, 1, 11, tzinfo=UTC)
END = START + timedelta(hours=1)
LONG_NAME = "o/" + "n" * 249_998  # 250,000 characters


@pytest.mark.parametrize("value, valid", [
    (0, True), (1, True), (MAX_ID, True), (-1, False), (-42, False), (MAX_ID + 1, False),
    (True, False), (False, False), (1.0, False), ("5", False), (None, False), ({"$gt": 0}, False),
])
def test_the_id_rule(value, valid):
    assert is_github_id(value) is valid


def test_the_name_rule():
    assert is_full_name("torvalds/linux") and is_full_name("x" * MAX_FULL_NAME_LENGTH)
    assert not any(is_full_name(v) for v in ("", "x" * (MAX_FULL_NAME_LENGTH + 1), LONG_NAME, 5, None))


def test_reader_skips_and_counts_ids_outside_the_domain_and_absurd_names(mongo_db):
    longest_ok = "o/" + "n" * (MAX_FULL_NAME_LENGTH - 2)
    mongo_db.repositories.insert_many([
        {"_id": 0, "full_name": "deepmind/dnc", "stars": 10},          # index 0 of the sample data
        {"_id": 1, "full_name": "o/r1", "stars": 10},
        {"_id": -42, "full_name": "o/negative", "stars": 10},
        {"_id": True, "full_name": "o/boolean", "stars": 10},
        {"_id": 5, "full_name": LONG_NAME, "stars": 10},
        {"_id": 6, "full_name": longest_ok, "stars": 10},
    ])
    t = END - timedelta(hours=2)
    mongo_db.stars.insert_many([
        {"user_id": 0, "repo_id": 0, "starred_at": t},
        {"user_id": 7, "repo_id": 1, "starred_at": t},
        {"user_id": 7, "repo_id": 6, "starred_at": t},
        {"user_id": 8, "repo_id": -42, "starred_at": t},    # the repository the API refuses
        {"user_id": 8, "repo_id": True, "starred_at": t},   # not repository 1
        {"user_id": -3, "repo_id": 1, "starred_at": t},
        {"user_id": False, "repo_id": 1, "starred_at": t},
    ])
    raw = read_raw_repositories(mongo_db, START, END)
    assert sorted(raw.repo_ids.tolist()) == [0, 1, 6]
    assert sorted(zip(raw.star_user_ids.tolist(), raw.star_repo_ids.tolist(), strict=True)) == [
        (0, 0), (7, 1), (7, 6)]
    assert raw.skipped == {"repository_bad_id": 2, "repository_bad_full_name": 1,
                           "star_bad_repo_id": 2, "star_bad_user_id": 2}
    # each name is stored at its own length, not at the width of the longest
    assert raw.full_names.dtype == object and raw.languages.dtype == object
    assert raw.full_names[raw.repo_ids == 6][0] == longest_ok


def test_embedded_layout_applies_the_same_rule(mongo_db):
    mongo_db.repositories.insert_many([
        {"_id": 1, "full_name": "o/r1", "stars": 10, "star_user_list": [0, 3, -1, True, 2**63 - 1]},
        {"_id": -2, "full_name": "o/neg", "stars": 10, "star_user_list": [3]},
    ])
    raw = read_raw_repositories(mongo_db, START, END, layout="embedded")
    assert sorted(raw.star_user_ids.tolist()) == [0, 3, 2**63 - 1]
    assert raw.skipped == {"repository_bad_id": 1, "star_bad_user_id": 2}


def _raw(names: np.ndarray) -> RawRepositories:
    n = len(names)
    return RawRepositories(
        repo_ids=np.arange(n, dtype=np.int64), full_names=names, repo_stars=np.ones(n, np.int64),
        languages=string_array([""] * n), star_user_ids=np.zeros(0, np.int64),
        star_repo_ids=np.zeros(0, np.int64), starred_at=np.zeros(0, "datetime64[us]"),
        window_start=START, window_end=END, layout="stars")


def test_codec_stores_strings_as_utf8_bytes_and_offsets():
    names = ["a/b", LONG_NAME, "ü/日本語", ""] + [f"o/r{i}" for i in range(1000)]
    data = encode(_raw(string_array(names)))
    with np.load(io.BytesIO(data), allow_pickle=False) as npz:   # every member loads without pickle
        utf8, offsets = npz["full_names.utf8"], npz["full_names.offsets"]
        assert utf8.dtype == np.uint8 and offsets.dtype == np.int64
        assert utf8.nbytes == sum(len(n.encode()) for n in names)  # no padding to the longest
        assert not [m for m in npz.files if npz[m].dtype.kind in "UO"]
    back = decode(data)
    assert back.full_names.dtype == object and back.full_names.tolist() == names
    # a fixed-width array (older callers) is stored the same way: the long, the non-ASCII and the
    # empty name (the 1,000 short ones would make it a 1 GB array, 250,000 UCS-4 characters each)
    edges = names[:4]
    assert decode(encode(_raw(np.array(edges)))).full_names.tolist() == edges


def test_codec_still_reads_version_1_files_and_refuses_non_strings():
    from batchrec_dagster.storage import codec

    raw = _raw(np.array(["a/b", "c/d"]))
    old = io.BytesIO()  # what version 1 wrote: fixed-width unicode members
    meta = codec.json.dumps({"format": codec.FORMAT, "version": 1, "type": "RawRepositories", "fields": {
        **{f: {"kind": "array"} for f in ("repo_ids", "full_names", "repo_stars", "languages",
                                           "star_user_ids", "star_repo_ids", "starred_at")},
        "window_start": {"kind": "json", "value": {"__datetime__": START.isoformat()}},
        "window_end": {"kind": "json", "value": {"__datetime__": END.isoformat()}},
        "layout": {"kind": "json", "value": "stars"}}}).encode()
    np.savez_compressed(old, __meta__=np.frombuffer(meta, np.uint8), repo_ids=raw.repo_ids,
                        full_names=raw.full_names, repo_stars=raw.repo_stars,
                        languages=np.array(["", ""]), star_user_ids=raw.star_user_ids,
                        star_repo_ids=raw.star_repo_ids, starred_at=raw.starred_at)
    assert decode(old.getvalue()).full_names.tolist() == ["a/b", "c/d"]
    bad = string_array(["a/b", "c/d"])
    bad[1] = 5
    with pytest.raises(CodecError, match="not strings"):
        encode(_raw(bad))


def test_csv_import_skips_ids_outside_the_domain_instead_of_crashing(tmp_path):
    from batchrec_dagster.sources.csv_import import read_stars_csv

    stars = tmp_path / "stars.csv"
    stars.write_text("user,repo\n1,10\n2,10\n-5,10\n3,-42\n4,99999999999999999999\n5,11\n")
    data, skipped = read_stars_csv(stars, time_end=END)
    assert skipped == {"bad_repo_id": 2, "bad_user_id": 1}
    assert sorted(data.star_user_ids.tolist()) == [1, 2, 5]
    assert sorted(data.repo_ids.tolist()) == [10, 11]
