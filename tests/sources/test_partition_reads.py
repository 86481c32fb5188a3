from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from batchrec_dagster.sources.collections import ensure_source_indexes
from batchrec_dagster.sources.partition_reads import SourceError, read_raw_repositories

START = datetime(2026, 3, 1, 11, tzinfo=UTC)
END = START + timedelta(hours=1)


def repos(db, *docs):
    db.repositories.insert_many([{"_id": i, "full_name": f"o/r{i}", "stars": 100, "language": "Go"} | d
                                 for i, d in docs])


def pairs(raw):
    return sorted(zip(raw.star_user_ids.tolist(), raw.star_repo_ids.tolist(), strict=True))


def test_partition_sees_only_stars_before_its_end(mongo_db):
    repos(mongo_db, (1, {}), (2, {}))
    mongo_db.stars.insert_many([
        {"user_id": 10, "repo_id": 1, "starred_at": END - timedelta(days=3)},
        {"user_id": 10, "repo_id": 2, "starred_at": END - timedelta(microseconds=1)},
        {"user_id": 11, "repo_id": 1, "starred_at": END},                       # the next hour's
        {"user_id": 12, "repo_id": 2, "starred_at": END + timedelta(days=1)},
    ])
    ensure_source_indexes(mongo_db)
    raw = read_raw_repositories(mongo_db, START, END)
    assert pairs(raw) == [(10, 1), (10, 2)]
    assert raw.starred_at.max() < np.datetime64(END.replace(tzinfo=None), "us")
    assert raw.skipped == {} and raw.stars_after_window == 2
    assert raw.layout == "stars" and raw.window_end == END
    later = read_raw_repositories(mongo_db, END, END + timedelta(days=2))
    assert len(later.star_user_ids) == 4


def test_malformed_documents_are_skipped_and_counted(mongo_db):
    repos(mongo_db, (1, {}), (2, {"language": None}))
    mongo_db.repositories.insert_many([
        {"_id": "x", "full_name": "o/str-id", "stars": 1},
        {"_id": 3, "stars": 5},                                   # no full_name
        {"_id": 4, "full_name": "o/r4", "stars": "many"},
        {"_id": 5, "full_name": "o/r5", "stars": 5, "language": 3},
        {"_id": 6, "full_name": "o/r6", "stars": True},
    ])
    t = END - timedelta(hours=5)
    mongo_db.stars.insert_many([
        {"user_id": 1, "repo_id": 1, "starred_at": t},
        {"user_id": 1, "repo_id": 1, "starred_at": t + timedelta(minutes=1)},   # duplicate pair
        {"user_id": 2, "repo_id": 99, "starred_at": t},                         # unknown repo
        {"user_id": "u", "repo_id": 1, "starred_at": t},
        {"user_id": 3, "repo_id": 2.5, "starred_at": t},
        {"user_id": 4, "repo_id": 2},                                           # no time
        {"user_id": 5, "repo_id": 2, "starred_at": "2026-03-01"},
        {"user_id": 6, "repo_id": 2, "starred_at": None},
        {"user_id": 7, "repo_id": 2, "starred_at": 1700000000},
        {"user_id": 8, "repo_id": 2, "starred_at": t},
    ])
    raw = read_raw_repositories(mongo_db, START, END, batch_size=2)
    assert sorted(raw.repo_ids.tolist()) == [1, 2]
    assert raw.languages[raw.repo_ids == 2][0] == ""
    assert pairs(raw) == [(1, 1), (8, 2)]
    assert raw.skipped == {
        "repository_bad_full_name": 1, "repository_bad_id": 1, "repository_bad_language": 1,
        "repository_bad_stars": 2, "star_bad_repo_id": 1, "star_bad_starred_at": 4,
        "star_bad_user_id": 1, "star_duplicate": 1, "star_unknown_repo": 1,
    }
    # the duplicate keeps its earliest time
    assert raw.starred_at[raw.star_user_ids == 1][0] == np.datetime64(t.replace(tzinfo=None), "us")


def test_embedded_layout_reads_the_current_state(mongo_db):
    repos(mongo_db, (1, {"star_user_list": [10, 11, 11]}), (2, {"star_user_list": [10, "bad"]}),
          (3, {"star_user_list": "nope"}), (4, {}))
    raw = read_raw_repositories(mongo_db, START, END, layout="embedded")
    assert raw.layout == "embedded"
    assert pairs(raw) == [(10, 1), (10, 2), (11, 1)]
    assert np.isnat(raw.starred_at).all()
    assert raw.skipped == {"repository_bad_star_user_list": 1, "star_bad_user_id": 1, "star_duplicate": 1}
    assert len(raw.repo_ids) == 4


def test_layout_is_the_callers_choice(mongo_db):
    # the asset passes its run config, else BATCHREC_SOURCE_LAYOUT (settings); the reader reads no setting
    repos(mongo_db, (1, {"star_user_list": [10]}))
    assert read_raw_repositories(mongo_db, START, END, layout="embedded").layout == "embedded"
    with pytest.raises(SourceError, match="csv"):
        read_raw_repositories(mongo_db, START, END, layout="csv")


def test_unique_index_on_duplicated_data_is_reported_not_raised(mongo_db):
    mongo_db.stars.insert_many([{"user_id": 1, "repo_id": 1, "starred_at": START} for _ in range(2)])
    problems = ensure_source_indexes(mongo_db)
    assert len(problems) == 1 and "user_repo_unique" in problems[0]
    # (by keys: nx-27017 names indexes itself)
    assert {"starred_at": 1} in [dict(ix["key"]) for ix in mongo_db.stars.list_indexes()]
