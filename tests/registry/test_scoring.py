"""The evaluation window read from a real MongoDB, and comparable scores on it."""

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from batchrec_dagster.registry.scoring import evaluate_entry, score_on_window
from batchrec_dagster.sources.evaluation_window import read_window
from batchrec_dagster.storage.blobs import LocalBlobStore
from recvae import Recommender, RecVAE, RecVAEConfig, dump_artifact

START = datetime(2026, 11, 30, 2, tzinfo=UTC)
END = START + timedelta(hours=1)
BEFORE, DURING, AFTER = START - timedelta(hours=5), START + timedelta(minutes=30), END + timedelta(minutes=1)


def star(user, repo, at):
    return {"user_id": user, "repo_id": repo, "starred_at": at}


@pytest.fixture
def window_db(mongo_db):
    mongo_db.repositories.insert_many([{"_id": r, "full_name": f"o/r{r}", "stars": 50} for r in range(1, 9)])
    stars = []
    # user 1: 5 earlier stars, 2 new ones in the window (one on repository 8, which only exists now)
    stars += [star(1, r, BEFORE) for r in (1, 2, 3, 4, 5)] + [star(1, 6, DURING), star(1, 8, DURING)]
    # user 2: only 2 earlier stars: too little history to fold in
    stars += [star(2, 1, BEFORE), star(2, 2, BEFORE), star(2, 3, DURING)]
    # user 3: enough history, but its window star is on an unknown repository; one star after the window
    stars += [star(3, r, BEFORE) for r in (1, 2, 3, 4, 5)] + [star(3, 999, DURING), star(3, 7, AFTER)]
    # user 4: enough history; stars again a repository it starred before (a duplicate): not new
    stars += [star(4, r, BEFORE) for r in (2, 3, 4, 5, 6)] + [star(4, 2, DURING), star(4, 7, DURING)]
    stars += [{"user_id": "x", "repo_id": 1, "starred_at": DURING}]  # malformed: skipped and counted
    mongo_db.stars.insert_many(stars)
    return mongo_db


def test_the_window_holds_new_stars_of_users_with_history(window_db):
    window = read_window(window_db, START, END, min_history=5)
    assert window.user_ids.tolist() == [1, 4]
    assert window.counts["users_with_too_little_history"] == 1   # user 2 (user 3 had no valid target)
    assert window.counts["skipped_star_unknown_repo"] == 1 and window.counts["skipped_star_bad_user_id"] == 1
    rows, cols = window.target.nonzero()
    targets = {(int(window.user_ids[u]), int(window.repo_ids[c])) for u, c in zip(rows, cols, strict=True)}
    assert targets == {(1, 6), (1, 8), (4, 7)}                  # (4, 2) is not new; nothing after END
    assert window.fold_in[0].nnz == 5 and window.fold_in[1].nnz == 5
    assert window.fold_in.multiply(window.target).nnz == 0
    sampled = read_window(window_db, START, END, min_history=5, max_users=1, seed=3)
    assert sampled.n_users == 1 and sampled.counts["users_left_out"] == 1


class FixedScores:
    """A scorer with a fixed ranking over its own vocabulary (the metric logic, not a model)."""

    def __init__(self, item_ids, scores):
        self.item_ids, self.n_items = np.asarray(item_ids), len(item_ids)
        self.row = torch.tensor(scores, dtype=torch.float32)

    def index_of(self, ids):
        position = {int(i): c for c, i in enumerate(self.item_ids)}
        return np.array([position.get(int(i), -1) for i in ids], dtype=np.int64)

    def score(self, fold_in: sp.csr_matrix) -> torch.Tensor:
        return self.row.unsqueeze(0).expand(fold_in.shape[0], -1)


def test_repositories_a_model_does_not_know_count_as_misses(window_db):
    window = read_window(window_db, START, END, min_history=5)
    # only `newer` knows repository 8 (user 1's second new star)
    older = score_on_window(FixedScores([1, 2, 3, 4, 5, 6, 7], [0, 0, 0, 0, 0, 9, 8]), window)
    newer = score_on_window(FixedScores([1, 2, 3, 4, 5, 6, 7, 8], [0, 0, 0, 0, 0, 9, 7, 8]), window)
    assert older["targets"] == newer["targets"] == 3
    assert (older["unknown_targets"], newer["unknown_targets"]) == (1, 0)
    assert older["metrics"]["users"] == newer["metrics"]["users"] == 2
    d2 = 1 / np.log2(3)   # the discount of rank 2
    # user 1 (targets 6, 8): older ranks 6 first and cannot rank 8; newer ranks 6, 8 first.
    # user 4 (target 7, repository 6 fed in): older ranks 7 first, newer second (after 8).
    assert older["score"] == pytest.approx((1 / (1 + d2) + 1) / 2)
    assert newer["score"] == pytest.approx((1 + d2) / 2)
    assert older["metrics"]["recall@20"] == pytest.approx((1 / 2 + 1) / 2)
    assert newer["metrics"]["recall@20"] == pytest.approx(1.0)


def test_an_artifact_that_fails_verification_is_reported_not_raised(window_db, tmp_path):
    store = LocalBlobStore(tmp_path / "models")
    config = RecVAEConfig(hidden_dim=8, latent_dim=4)
    ids = np.arange(1, 9, dtype=np.int64)
    blob = store.put_new("m.pt", dump_artifact(Recommender(RecVAE(8, config), ids, np.ones(8, np.float32)),
                                               config=config, metrics={}))
    entry = {"file_name": "m.pt", "size_bytes": blob.size_bytes, "sha256": blob.sha256}
    window = read_window(window_db, START, END, min_history=5)
    result, recommender = evaluate_entry(store, entry, window)
    assert result["problem"] is None and 0 <= result["score"] <= 1 and recommender is not None
    tampered, _ = evaluate_entry(store, {**entry, "sha256": "0" * 64}, window)
    assert tampered["score"] is None and "sha256" in tampered["problem"]
    missing, _ = evaluate_entry(store, {**entry, "file_name": "gone.pt"}, window)
    assert missing["score"] is None and "BlobNotFoundError" in missing["problem"]
