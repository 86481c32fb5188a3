"""Which training users a warm hour counts as changed: their newest star against the starting
model's data_end (user_item_matrix.last_starred, recvae_model.changed_users)."""

from datetime import UTC, datetime

import numpy as np
import scipy.sparse as sp

from batchrec_dagster.defs.assets.recvae_model import changed_users
from batchrec_dagster.defs.assets.user_item_matrix import last_starred
from batchrec_dagster.storage.values import VaeInput
from batchrec_dagster.training.start import Start


def _t(text: str) -> np.datetime64:
    return np.datetime64(text, "us")


def test_last_starred_is_each_users_newest_star_and_nat_without_times() -> None:
    users = np.array([5, 7, 5, 9])
    times = np.array([_t("2026-03-01T10:00"), _t("2026-03-01T12:00"), _t("2026-03-01T11:30"),
                      np.datetime64("NaT", "us")])
    out = last_starred(users, times, np.array([9, 5, 7, 8]))
    assert out[1] == _t("2026-03-01T11:30") and out[2] == _t("2026-03-01T12:00")
    assert np.isnat(out[0]) and np.isnat(out[3])  # no time (legacy layout) / no star at all


def _input(last: np.ndarray | None) -> VaeInput:
    empty = sp.csr_matrix((0, 2), dtype=np.float32)
    return VaeInput(train=sp.csr_matrix(np.ones((3, 2), np.float32)), train_user_ids=np.arange(3),
                    item_ids=np.arange(2), validation_user_ids=np.arange(0), validation_fold_in=empty,
                    validation_target=empty, train_last_starred=last)


def test_changed_users_have_a_star_at_or_after_the_starting_models_data_end() -> None:
    start = Start("warm", "", source={"data_end": datetime(2026, 3, 1, 11, tzinfo=UTC).isoformat()})
    last = np.array([_t("2026-03-01T10:59:59"), _t("2026-03-01T11:00"), _t("2026-03-01T11:40")])
    assert changed_users(_input(last), start).tolist() == [1, 2]
    # unknown: every user is trained (older stored values, the legacy layout without star times)
    assert changed_users(_input(None), start) is None
    assert changed_users(_input(np.full(3, np.datetime64("NaT", "us"))), start) is None
