import io
from datetime import UTC, datetime

import numpy as np
import pytest
import scipy.sparse as sp

from batchrec_dagster.storage.codec import CodecError, decode, encode
from batchrec_dagster.storage.values import RawRepositories, TrainedModel, UserItemMatrix, VaeInput

END = datetime(2026, 3, 1, 12, tzinfo=UTC)


def csr(rows, cols, shape):
    return sp.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=shape)


def test_every_asset_type_round_trips():
    raw = RawRepositories(
        repo_ids=np.array([1, 2], np.int64), full_names=np.array(["a/x", "b/ü"]), repo_stars=np.array([5, 9]),
        languages=np.array(["Go", ""]), star_user_ids=np.array([7, 8]), star_repo_ids=np.array([1, 2]),
        starred_at=np.array(["2026-03-01T10:00", "NaT"], dtype="datetime64[us]"),
        window_start=END.replace(hour=11), window_end=END, layout="stars", skipped={"star_unknown_repo": 3})
    matrix = UserItemMatrix(matrix=csr([0, 1], [1, 0], (2, 2)), user_ids=np.array([7, 8]),
                            item_ids=np.array([1, 2]), dropped={"sparse_users": 1}, window_end=END)
    vae = VaeInput(train=csr([0], [1], (1, 2)), train_user_ids=np.array([7]), item_ids=np.array([1, 2]),
                   validation_user_ids=np.array([8]), validation_fold_in=csr([0], [0], (1, 2)),
                   validation_target=csr([0], [1], (1, 2)), seed=42, window_end=END,
                   item_names=np.array(["a/x", "b/ü"]))
    model = TrainedModel(file_name="recvae_0.1.pt", bucket="b", uri="gs://b/recvae_0.1.pt", sha256="0" * 64,
                         size_bytes=10, score=0.1, metrics={"ndcg@100": 0.1},
                         popularity_metrics={"ndcg@100": 0.05},
                         config={"mixture_weights": [0.15, 0.75, 0.1], "patience": None},
                         history=[{"epoch": 1, "loss": float("nan")}], data_sizes={"users": 2},
                         training_seconds=1.5, epochs=1, window_end=END)
    for value in (raw, matrix, vae, model):
        back = decode(encode(value))
        assert type(back) is type(value)
        for name, original in vars(value).items():
            stored = getattr(back, name)
            if sp.issparse(original):
                assert (stored != original).nnz == 0 and stored.shape == original.shape
            elif isinstance(original, np.ndarray):
                np.testing.assert_array_equal(stored, original)
                # strings come back as object arrays (each at its own length), the rest as stored
                assert stored.dtype == (object if original.dtype.kind == "U" else original.dtype)
            elif name == "history":
                assert stored[0]["epoch"] == 1 and np.isnan(stored[0]["loss"])
            else:
                assert stored == original, name
    assert decode(encode(raw)).window_end.tzinfo is not None


def test_object_arrays_become_utf8_bytes_not_pickles():
    matrix = UserItemMatrix(matrix=csr([0], [0], (1, 1)), user_ids=np.array([1]), item_ids=np.array([2]),
                            item_names=np.array(["a/b"], dtype=object))
    data = encode(matrix)
    with np.load(io.BytesIO(data), allow_pickle=False) as npz:  # every member loads without pickle
        assert npz["item_names.utf8"].tobytes() == b"a/b"
    assert decode(data).item_names.tolist() == ["a/b"]


def test_refuses_what_it_cannot_store_or_read():
    with pytest.raises(CodecError, match="cannot store"):
        encode({"a": 1})
    with pytest.raises(CodecError, match="naive"):
        encode(UserItemMatrix(matrix=csr([0], [0], (1, 1)), user_ids=np.array([1]), item_ids=np.array([2]),
                              window_end=datetime(2026, 1, 1)))
    with pytest.raises(CodecError):
        decode(b"not an npz")
    pickled = io.BytesIO()
    np.savez(pickled, __meta__=np.array([{"type": "UserItemMatrix"}], dtype=object))
    with pytest.raises(CodecError):
        decode(pickled.getvalue())


def _snapshot(n: int = 3000) -> RawRepositories:
    rng = np.random.default_rng(3)
    return RawRepositories(
        repo_ids=np.arange(n, dtype=np.int64), full_names=np.array([f"o/r{i}" for i in range(n)]),
        repo_stars=rng.integers(0, 99, n), languages=np.array(["Go"] * n),
        star_user_ids=rng.integers(0, 500, n), star_repo_ids=rng.integers(0, n, n),
        starred_at=np.full(n, "2026-03-01T10:00", dtype="datetime64[us]"),
        window_start=END.replace(hour=11), window_end=END, layout="stars", skipped={})


def test_a_truncated_or_bit_flipped_value_is_a_codec_error():
    """Issue 18 D1: these raised zipfile.BadZipFile, zlib.error, tokenize.TokenError... Every
    damaged copy must either decode to the same value (a flip in a zip field nothing checks, such
    as a timestamp) or raise CodecError: nothing else escapes, nothing decodes to other data."""
    value = _snapshot()
    data = encode(value)
    damaged = [data[:len(data) // 3], data[:len(data) - 1], data[:22]]
    step = max(1, len(data) // 1500)
    for i in range(0, len(data), step):
        flipped = bytearray(data)
        flipped[i] ^= 1 << (i % 8)
        damaged.append(bytes(flipped))
    errors = 0
    for copy in damaged:
        try:
            back = decode(copy)
        except CodecError:
            errors += 1
            continue
        np.testing.assert_array_equal(back.star_user_ids, value.star_user_ids)
        assert back.full_names.tolist() == value.full_names.tolist()
    assert errors > len(damaged) * 0.8
    with pytest.raises(CodecError, match="damaged stored asset value: BadZipFile"):
        decode(data[:len(data) // 3])
