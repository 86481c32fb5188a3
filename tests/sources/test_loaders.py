from datetime import UTC, datetime, timedelta

import pytest

from batchrec_dagster.sources.csv_import import CsvFormatError, import_csv
from batchrec_dagster.sources.demo_data import DemoSpec, generate_demo, load_demo, loaded_dataset

END = datetime(2026, 3, 1, 11, tzinfo=UTC)
SPEC = DemoSpec(users=60, repos=40, topics=4, mean_stars_per_user=8, days=2)


def test_demo_is_idempotent_and_github_shaped(mongo_db):
    first = load_demo(mongo_db, SPEC, end=END)
    assert not first["skipped"]
    n_stars = mongo_db.stars.count_documents({})
    assert n_stars == first["stars"] > 60 * 5 - 1
    again = load_demo(mongo_db, SPEC, end=END + timedelta(days=1))
    assert again["skipped"] and mongo_db.stars.count_documents({}) == n_stars
    repo = mongo_db.repositories.find_one({})
    assert {"_id", "full_name", "stars", "language", "topics", "updated_at"} <= set(repo)
    assert mongo_db.users.find_one({"login": "demo-user-0"})["_id"] > 0
    newest = next(mongo_db.stars.find({}).sort("starred_at", -1).limit(1))["starred_at"]
    oldest = next(mongo_db.stars.find({}).sort("starred_at", 1).limit(1))["starred_at"]
    assert END - timedelta(days=2) <= oldest < newest < END
    # another spec replaces the data instead of adding to it
    other = load_demo(mongo_db, DemoSpec(users=30, repos=40, topics=4, mean_stars_per_user=8), end=END)
    assert not other["skipped"] and mongo_db.users.count_documents({}) == 30
    assert loaded_dataset(mongo_db)["spec"]["users"] == 30


def test_demo_structure_beats_popularity():
    """The generator's topics are real signal: each user's stars concentrate on one or two topics."""
    import numpy as np

    data = generate_demo(SPEC, END)
    topic_of = dict(zip(data.repo_ids.tolist(), data.repo_topics.tolist(), strict=True))
    top_share = []
    for user in np.unique(data.star_user_ids):
        topics = [topic_of[r] for r in data.star_repo_ids[data.star_user_ids == user].tolist()]
        counts = sorted((topics.count(t) for t in set(topics)), reverse=True)
        top_share.append(sum(counts[:2]) / len(topics))
    assert np.mean(top_share) > 0.75  # 4 topics uniformly would give about 0.5


def test_embedded_demo_layout(mongo_db):
    load_demo(mongo_db, SPEC, end=END, layout="embedded")
    assert "stars" not in mongo_db.list_collection_names()
    total = sum(len(d["star_user_list"]) for d in mongo_db.repositories.find({}, {"star_user_list": 1}))
    assert total == loaded_dataset(mongo_db)["stars"]


def test_import_generic_csv_with_logins_names_and_times(mongo_db, tmp_path):
    path = tmp_path / "stars.csv"
    path.write_text("user,repo,starred_at\n"
                    "alice,torvalds/linux,2026-02-01T10:00:00Z\n"
                    "alice,rust-lang/rust,2026-02-02T10:00:00+09:00\n"
                    "bob,torvalds/linux,2026-02-03T10:00:00\n"
                    "bob,torvalds/linux,2026-02-04T10:00:00\n"
                    "carol,rust-lang/rust,yesterday\n"
                    ",rust-lang/rust,2026-02-01T10:00:00\n"
                    "short-row\n")
    doc = import_csv(mongo_db, path, time_end=END)
    assert doc["stars"] == 3 and doc["users"] == 2 and doc["repositories"] == 2
    assert doc["skipped"] == {"bad_row": 2, "bad_starred_at": 1, "duplicate": 1}
    linux = mongo_db.repositories.find_one({"full_name": "torvalds/linux"})
    assert linux["stars"] == 2
    alice = mongo_db.users.find_one({"login": "alice"})
    times = sorted(d["starred_at"] for d in mongo_db.stars.find({"user_id": alice["_id"]}))
    assert times == [datetime(2026, 2, 1, 10, tzinfo=UTC), datetime(2026, 2, 2, 1, tzinfo=UTC)]


def test_import_shared_layout_without_times(mongo_db, tmp_path):
    (tmp_path / "stars.csv").write_text("user,project,has_star\n0,5,1\n0,6,1\n1,5,1\n1,5,1\n2,6,0\n")
    (tmp_path / "repos.csv").write_text("index,name\n5,a/five\n6,b/six\n")
    doc = import_csv(mongo_db, tmp_path / "stars.csv", tmp_path / "repos.csv", time_end=END, spread_days=1)
    assert doc["stars"] == 3 and doc["skipped"] == {"duplicate": 1, "not_starred": 1}
    assert mongo_db.repositories.find_one({"_id": 6})["full_name"] == "b/six"
    assert mongo_db.users.find_one({"login": "user-1"})["_id"] == 1
    for star in mongo_db.stars.find({}):
        assert END - timedelta(days=1) <= star["starred_at"] < END


def test_import_rejects_unknown_layouts(mongo_db, tmp_path):
    (tmp_path / "x.csv").write_text("a,b\n1,2\n")
    with pytest.raises(CsvFormatError, match="header"):
        import_csv(mongo_db, tmp_path / "x.csv", time_end=END)
