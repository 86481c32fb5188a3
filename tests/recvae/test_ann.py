"""recvae.ann: the decoder as a maximum-inner-product index (real faiss indexes, no stand-ins)."""

from __future__ import annotations

import numpy as np
import pytest

from recvae import Popularity, Recommender, RecVAE, RecVAEConfig, Split, ann


@pytest.fixture(scope="module")
def rec(small_split: Split) -> Recommender:
    model = RecVAE(small_split.train.shape[1], RecVAEConfig(hidden_dim=32, latent_dim=8, seed=4))
    return Recommender(model, small_split.item_ids, Popularity().fit(small_split.train).popularity)


def _users(n_items: int) -> list[np.ndarray]:
    rng = np.random.default_rng(7)
    return [rng.choice(n_items, size, replace=False).astype(np.int64) for size in (1, 3, 12, 40, 90)]


def _approx(rec: Recommender, index, users: list[np.ndarray], k: int) -> tuple[np.ndarray, np.ndarray]:
    vectors = ann.decoder_vectors(rec.model)
    queries = ann.query_vectors(ann.user_codes(rec.model, _csr(users, rec.n_items)))
    return ann.search_excluding(index, queries, users, k,
                                lambda row: ann.exact_top_k(vectors, queries[row], users[row], k))


def _csr(users: list[np.ndarray], n_items: int):
    from recvae.inference import lists_to_csr

    return lists_to_csr(users, n_items)


def test_bias_as_a_coordinate_gives_the_decoder_scores(rec: Recommender) -> None:
    users = _users(rec.n_items)
    z = ann.user_codes(rec.model, _csr(users, rec.n_items))
    scores = ann.query_vectors(z) @ ann.decoder_vectors(rec.model).T
    expected = rec.score(_csr(users, rec.n_items)).numpy()
    assert np.allclose(scores, expected, rtol=1e-4, atol=1e-4)


def test_a_flat_index_gives_the_exact_top_k_without_own_items(rec: Recommender) -> None:
    users = _users(rec.n_items)
    index = ann.build_index(ann.decoder_vectors(rec.model), ann.IndexParams("flat"))
    idx, scores = _approx(rec, index, users, k=20)
    expected_idx, expected_scores = rec.recommend(users, k=20)
    assert np.array_equal(idx, expected_idx)
    assert np.allclose(scores, expected_scores, rtol=1e-4, atol=1e-4)
    for row, own in enumerate(users):
        assert not set(idx[row]) & set(own.tolist()) and (idx[row] >= 0).all()


def test_k_results_even_when_the_index_finds_too_few(rec: Recommender) -> None:
    # IVF probing one of many lists reaches only a few items: the exact fallback fills the row
    params = ann.IndexParams("ivf", nlist=50, nprobe=1)
    index = ann.build_index(ann.decoder_vectors(rec.model), params)
    users = _users(rec.n_items)
    idx, _ = _approx(rec, index, users, k=30)
    expected_idx, _ = rec.recommend(users, k=30)
    assert (idx >= 0).all() and idx.shape == (len(users), 30)
    assert np.array_equal(idx, expected_idx)  # every short row was answered exactly


@pytest.mark.parametrize("overfetch_max_own", [ann.OVERFETCH_MAX_OWN, 10, 0])
def test_ivfpq_probing_every_list_and_reranking_every_candidate_is_exact(
        rec: Recommender, overfetch_max_own: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """IVF with 4-bit PQ fast-scan codes and exact re-ranking: with every list probed and every
    item a candidate, the re-ranked top-k is the exact one. Own items are dropped from a batch's
    over-fetched results (users with at most OVERFETCH_MAX_OWN of them), or skipped inside the
    base index's search (the selector travels in the refine index's base parameters): 10 splits
    the users between the two ways, 0 sends them all through the selector."""
    monkeypatch.setattr(ann, "OVERFETCH_MAX_OWN", overfetch_max_own)
    n = rec.n_items
    params = ann.IndexParams("ivfpq", nlist=8, nprobe=8, refine=n)
    index = ann.build_index(ann.decoder_vectors(rec.model), params)
    assert ann.index_kind(index) == "ivfpq"
    users = _users(n)
    idx, scores = _approx(rec, index, users, k=20)
    expected_idx, expected_scores = rec.recommend(users, k=20)
    assert np.array_equal(idx, expected_idx)
    assert np.allclose(scores, expected_scores, rtol=1e-4, atol=1e-4)
    for row, own in enumerate(users):
        assert not set(idx[row]) & set(own.tolist())


def test_ivfpq_search_knobs_are_set_and_narrow_ones_lose_recall(rec: Recommender, small_split: Split) -> None:
    params = ann.IndexParams("ivfpq", nlist=50, nprobe=1, refine=1)
    built = ann.build_for_model(rec.model, params)
    index = ann.deserialize(built.data, n_items=built.n_items, dim=built.dim)
    ann.set_search_params(index, ann.IndexParams("ivfpq", nprobe=7, refine=3))
    assert ann.index_kind(index) == "ivfpq"
    assert index.k_factor == 3 and faiss_ivf(index).nprobe == 7
    fold_in = small_split.test.fold_in
    narrow = ann.measure_recall(rec.model, built.data, fold_in, k=20, params=params)
    wide = ann.measure_recall(rec.model, built.data, fold_in, k=20,
                              params=ann.IndexParams("ivfpq", nprobe=50, refine=rec.n_items))
    assert narrow["recall"] < 0.9 and wide["recall"] == 1.0


def test_euclidean_rows_rank_by_inner_product_and_search_scores_are_inner_products() -> None:
    """ivfpq's rows in Euclidean form: equal norms, and the L2-nearest row to [q, 0] is the row of
    largest inner product; `search` reports the inner products, not the distances."""
    import faiss

    rng = np.random.default_rng(11)
    vectors = (rng.standard_normal((500, 6)) * rng.uniform(0.1, 3.0, (500, 1))).astype(np.float32)
    rows = ann.euclidean_rows(vectors)
    norms = np.linalg.norm(rows, axis=1)
    assert rows.shape == (500, 7) and np.allclose(norms, norms.max(), rtol=1e-5)
    flat = faiss.IndexFlatL2(7)
    flat.add(rows)
    queries = rng.standard_normal((8, 6)).astype(np.float32)
    _, nearest = flat.search(np.hstack([queries, np.zeros((8, 1), np.float32)]), 10)
    exact = np.stack([ann.exact_top_k(vectors, q, np.zeros(0, np.int64), 10)[0] for q in queries])
    assert np.array_equal(nearest, exact)
    index = ann.build_index(vectors, ann.IndexParams("ivfpq", nlist=4, nprobe=4, refine=500))
    scores, found = ann.search(index, queries, 10)
    assert np.array_equal(found, exact)
    assert np.allclose(scores, np.take_along_axis(queries @ vectors.T, exact, axis=1), rtol=1e-5, atol=1e-5)
    assert np.allclose(ann.stored_vectors(index, np.arange(5)), vectors[:5], atol=1e-6)


def test_an_l2_index_not_in_euclidean_form_is_refused() -> None:
    import faiss

    vectors = np.random.default_rng(12).standard_normal((50, 5)).astype(np.float32)
    foreign = faiss.IndexFlatL2(6)  # L2 over rows of unequal norms: its nearest rows are not MIPS
    foreign.add(np.hstack([vectors, np.ones((50, 1), np.float32)]))
    index = ann.deserialize(ann.serialize(foreign), n_items=50, dim=5)
    with pytest.raises(ann.IndexLoadError, match="euclidean form"):
        ann.stored_vectors(index, np.arange(10))


def faiss_ivf(index):
    import faiss

    return faiss.extract_index_ivf(index)


def test_pq_subquantizers_split_the_dimension_evenly(monkeypatch: pytest.MonkeyPatch) -> None:
    assert ann.pq_subquantizers(202) == 202 // ann.IVFPQ_SUB_DIMS  # RecVAE's latent 200 + bias + 1
    monkeypatch.setattr(ann, "IVFPQ_SUB_DIMS", 3)
    assert ann.pq_subquantizers(201) == 67  # RecVAE's latent 200 + bias: 3 dimensions each
    assert ann.pq_subquantizers(9) == 3
    assert ann.pq_subquantizers(202) == 101  # 202 = 2 x 101: no part of 3 fits, parts of 2
    assert ann.pq_subquantizers(101) == 101  # a prime: one dimension each


def test_k_beyond_the_items_left_is_padded(rec: Recommender) -> None:
    index = ann.build_index(ann.decoder_vectors(rec.model), ann.IndexParams("flat"))
    users = [np.arange(rec.n_items - 3, dtype=np.int64)]
    idx, scores = _approx(rec, index, users, k=10)
    assert sorted(idx[0][:3].tolist()) == [rec.n_items - 3, rec.n_items - 2, rec.n_items - 1]
    assert (idx[0][3:] == -1).all() and np.isneginf(scores[0][3:]).all()


def test_serialised_index_round_trips_and_bad_bytes_are_refused(rec: Recommender) -> None:
    built = ann.build_for_model(rec.model, ann.IndexParams("hnsw"))
    n, dim = built.n_items, built.dim
    index = ann.deserialize(built.data, n_items=n, dim=dim)
    assert index.ntotal == n and ann.index_kind(index) == "hnsw"
    with pytest.raises(ann.IndexLoadError, match="not a faiss index"):
        ann.deserialize(built.data[: len(built.data) // 2], n_items=n, dim=dim)
    with pytest.raises(ann.IndexLoadError, match="not a faiss index"):
        ann.deserialize(b"\x00" * 64, n_items=n, dim=dim)
    with pytest.raises(ann.IndexLoadError, match="the model has"):
        ann.deserialize(built.data, n_items=n + 1, dim=dim)


def test_recall_is_measured_against_exact_scoring(rec: Recommender, small_split: Split) -> None:
    fold_in = small_split.test.fold_in
    flat = ann.build_for_model(rec.model, ann.IndexParams("flat"))
    assert ann.measure_recall(rec.model, flat.data, fold_in, k=20)["recall"] == 1.0
    # an IVF index probing 1 of 50 lists misses most of the exact top-20: recall well below 1
    params = ann.IndexParams("ivf", nlist=50, nprobe=1)
    ivf = ann.build_for_model(rec.model, params)
    measured = ann.measure_recall(rec.model, ivf.data, fold_in, k=20, params=params)
    assert measured["users"] == fold_in.shape[0] and measured["recall"] < 0.9


def test_recall_at_k_counts_overlap() -> None:
    exact = np.array([[1, 2, 3, 4], [5, 6, -1, -1]])
    approx = np.array([[1, 2, 9, 8], [6, 5, 7, 3]])
    assert ann.recall_at_k(approx, exact) == pytest.approx((2 + 2) / 6)


def test_auto_kind_is_hnsw_below_the_ivf_size_and_ivfpq_from_it() -> None:
    assert ann.IndexParams().kind == "auto"
    assert ann.IndexParams().resolved(ann.IVF_MIN_ITEMS - 1).kind == "hnsw"
    large = ann.IndexParams().resolved(10**6)
    assert ann.IndexParams().resolved(ann.IVF_MIN_ITEMS).kind == large.kind == "ivfpq"
    assert large.nlist == 2000
    assert ann.IndexParams("flat").resolved(10**7).kind == "flat"  # an explicit kind stays


def test_ivf_probing_every_list_is_exact() -> None:
    """IVF-Flat with about 2*sqrt(n) lists; with every list probed it is an exact search."""
    rng = np.random.default_rng(3)
    vectors = rng.standard_normal((4000, 9)).astype(np.float32)
    index = ann.build_index(vectors, ann.IndexParams("ivf"))
    assert ann.index_kind(index) == "ivf" and index.nlist == int(2 * np.sqrt(4000))
    ann.set_search_params(index, ann.IndexParams("ivf", nprobe=index.nlist))
    queries = rng.standard_normal((20, 9)).astype(np.float32)
    _, found = ann.search(index, queries, 10)
    exact = np.stack([ann.exact_top_k(vectors, q, np.zeros(0, np.int64), 10)[0] for q in queries])
    assert ann.recall_at_k(found, exact) == 1.0


@pytest.mark.parametrize("kind", ["ivf", "ivfpq", "hnsw", "flat"])
def test_index_file_is_mapped_and_answers_as_its_bytes(kind: str, tmp_path) -> None:
    """read_index_file maps the file (IVF's lists, HNSW's and flat's vectors, ivfpq's re-ranking
    rows), so workers that read the same file share those pages; it answers as the deserialised
    bytes do."""
    from pathlib import Path

    rng = np.random.default_rng(5)
    vectors = rng.standard_normal((3000, 9)).astype(np.float32)
    data = ann.serialize(ann.build_index(vectors, ann.IndexParams(kind)))
    path = tmp_path / f"{kind}.faiss"
    path.write_bytes(data)
    mapped = ann.read_index_file(path, n_items=3000, dim=9)
    assert str(path) in Path("/proc/self/maps").read_text()
    in_memory = ann.deserialize(data, n_items=3000, dim=9)
    for index in (mapped, in_memory):
        ann.set_search_params(index, ann.IndexParams(kind))
    queries = rng.standard_normal((5, 9)).astype(np.float32)
    assert np.array_equal(ann.search(mapped, queries, 10)[1], ann.search(in_memory, queries, 10)[1])
    with pytest.raises(ann.IndexLoadError):
        ann.read_index_file(path, n_items=2999, dim=9)
    # a truncated copy in a file of its own: truncating the mapped file in place would make the
    # pages `mapped` still maps past its new end raise SIGBUS (served copies are never rewritten:
    # serving/model/local_copies.py publishes each file once, read-only, by link)
    truncated = tmp_path / f"{kind}-truncated.faiss"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(ann.IndexLoadError):
        ann.read_index_file(truncated, n_items=3000, dim=9)


def test_wider_knobs_grow_to_their_widest_and_stop() -> None:
    steps = {}
    for kind in ("hnsw", "ivf", "ivfpq", "flat"):
        params = ann.IndexParams(kind, ef_search=100, nprobe=3, refine=8).resolved(10_000)
        seen = [params]
        while (wider := seen[-1].wider()) is not None:
            seen.append(wider)
        steps[kind] = seen
    assert [p.ef_search for p in steps["hnsw"]] == [100, 200, 400, 800, 1024]
    ivf_probes = [p.nprobe for p in steps["ivf"]]
    assert ivf_probes[0] == 3 and ivf_probes[-1] == steps["ivf"][0].nlist == 200
    assert all(b > a for a, b in zip(ivf_probes, ivf_probes[1:], strict=False))
    # ivfpq: every list probed first, then more candidates re-ranked
    assert steps["ivfpq"][-1].nprobe == 200 and [p.refine for p in steps["ivfpq"]][-4:] == [8, 16, 32, 64]
    assert steps["flat"] == [steps["flat"][0]]
