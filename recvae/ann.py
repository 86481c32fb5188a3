"""Approximate top-k over RecVAE's decoder: a maximum-inner-product index (faiss).

A repository's score is `w_i . z + b_i` (the decoder is one linear layer over the user's code
`z`). With the bias appended to each decoder row and a 1 appended to `z`, the score is a plain
inner product `[w_i, b_i] . [z, 1]`, so the top-k is a maximum-inner-product search over the
decoder rows. Which index (`auto`: faiss HNSW below IVF_MIN_ITEMS repositories, from there IVF
with 4-bit PQ fast-scan codes and exact re-ranking, `ivfpq`) and why: docs/serving.md ("How to
choose the index type"), measured by benchmarks/ann_compare.py.

`ivfpq` searches the rows in Euclidean form (`euclidean_rows`): each row gets one more coordinate,
sqrt(R^2 - |x|^2) with R the largest row norm, and the query a 0 there, so every row has norm R
and the nearest row in L2 is the row of largest inner product. Its lists are then L2 k-means
cells, where inner-product lists let high-norm centroids take most rows: the same probes find
more of the top-k. And 202 dimensions split into codes of two (201 do not), which halves the bytes
a probe scans (docs/serving.md has the comparison). `search` answers every kind with
inner-product scores.

The index is serialised with faiss's own format (`write_index`), never pickle; the bytes are
stored and checksummed like the artifact. Import of faiss is deferred so that `recvae` itself
loads without it (training does not need it).
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch

INDEX_KINDS = ("auto", "hnsw", "ivf", "ivfpq", "flat")
# `auto`: HNSW answers fastest, but its build grows faster than linearly (112 s at 200,000
# repositories, 503 s at 10^6 on the shared 2 cores); ivfpq trains and fills 10^6 rows in 8-10 s
# and answers a user in 0.34 ms in a batch of 16 (IVF-Flat, which reads every probed row whole:
# 14-16 ms)
IVF_MIN_ITEMS = 100_000
# HNSW: 32 links per node, construction beam 40, query beam 128 (docs/serving.md has the
# recall/latency curve these come from)
HNSW_M = 32
HNSW_EF_CONSTRUCTION = 40
HNSW_EF_SEARCH = 128
# IVF (`ivf`: IVF-Flat; `ivfpq`: fast-scan codes, below): about 2*sqrt(n) lists (2,000 at 10^6),
# 192 probed (ivfpq's recall@20 0.990 at 10^6, 0.997 at 200,000); k-means on 32 points per list,
# 10 iterations
IVF_LISTS_PER_SQRT_N = 2
IVF_NPROBE = 192
IVF_TRAIN_PER_LIST = 32
IVF_KMEANS_ITER = 10
# ivfpq: each list holds 4-bit product-quantizer codes of IVFPQ_SUB_DIMS dimensions per
# sub-quantizer of the Euclidean rows (202 dimensions: 101 codes, 51 bytes a row), scanned with
# SIMD lookups (faiss fast-scan); the best IVFPQ_REFINE * k candidates are re-ranked with exact
# inner products over the rows. One dimension per code with 8 * k re-ranked ranks as well and
# scans twice the bytes; inner-product codes of 2 dimensions need 32 * k (docs/serving.md)
IVFPQ_SUB_DIMS = 2
IVFPQ_REFINE = 16
# ivfpq: users with at most this many own items are searched in one call per batch, each asking
# for more results and dropping its own afterwards (per-user selector searches cost about twice
# as much per user: benchmarks/ann_compare.py's `batch16_excluding_ms_per_query`)
OVERFETCH_MAX_OWN = 200
# an index below its recall floor is measured again with wider search knobs (IndexParams.wider):
# HNSW's beam doubles up to this; IVF's probes grow by half up to every list (192 -> 288: recall
# at 10^6 from 0.990 to over 0.994, 256's, for about 40% more search time; doubling costs twice),
# then ivfpq's re-ranked candidates per result double up to MAX_REFINE
MAX_EF_SEARCH = 1024
MAX_REFINE = 64


def _faiss() -> Any:
    import faiss  # deferred: only serving and index building need it

    return faiss


class IndexLoadError(ValueError):
    """Index bytes that do not load, or do not fit the model they are paired with."""


def decoder_vectors(model: torch.nn.Module) -> np.ndarray:
    """[n_items, latent + 1] float32: each decoder row with its bias appended."""
    decoder = model.decoder
    weight = decoder.weight.detach().to("cpu", torch.float32).numpy()
    bias = decoder.bias.detach().to("cpu", torch.float32).numpy()
    return np.ascontiguousarray(np.hstack([weight, bias[:, None]]), dtype=np.float32)


def query_vectors(z: np.ndarray | torch.Tensor) -> np.ndarray:
    """[B, latent + 1] float32: each user code with a 1 appended (it multiplies the bias)."""
    if isinstance(z, torch.Tensor):
        z = z.detach().to("cpu", torch.float32).numpy()
    z = np.asarray(z, dtype=np.float32)
    return np.ascontiguousarray(np.hstack([z, np.ones((z.shape[0], 1), np.float32)]))


@dataclass(frozen=True)
class IndexParams:
    kind: str = "auto"
    hnsw_m: int = HNSW_M
    ef_construction: int = HNSW_EF_CONSTRUCTION
    ef_search: int = HNSW_EF_SEARCH
    nlist: int | None = None  # IVF: None = IVF_LISTS_PER_SQRT_N * sqrt(n_items)
    nprobe: int = IVF_NPROBE
    refine: int = IVFPQ_REFINE  # ivfpq: candidates re-ranked exactly, per result
    seed: int = 0

    def __post_init__(self) -> None:
        if self.kind not in INDEX_KINDS:
            raise ValueError(f"index kind must be one of {', '.join(INDEX_KINDS)}, not {self.kind!r}")

    def resolved(self, n_items: int) -> IndexParams:
        """These parameters with `auto` replaced by the kind for a catalog of `n_items`, and IVF's
        number of lists filled in."""
        kind = self.kind if self.kind != "auto" else "ivfpq" if n_items >= IVF_MIN_ITEMS else "hnsw"
        nlist = (min(self.nlist or max(1, int(IVF_LISTS_PER_SQRT_N * np.sqrt(n_items))), n_items)
                 if kind in ("ivf", "ivfpq") else self.nlist)
        return replace(self, kind=kind, nlist=nlist)

    def wider(self) -> IndexParams | None:
        """The next wider search knobs of a resolved index (more recall, slower queries), or None
        when they are at their widest: HNSW's beam doubles; IVF's probes grow by half up to every
        list, then ivfpq's re-ranked candidates double. The index itself stays as built."""
        if self.kind == "hnsw" and self.ef_search < MAX_EF_SEARCH:
            return replace(self, ef_search=min(MAX_EF_SEARCH, self.ef_search * 2))
        if self.kind in ("ivf", "ivfpq") and self.nlist is not None and self.nprobe < self.nlist:
            return replace(self, nprobe=min(self.nlist, max(self.nprobe + 1, self.nprobe * 3 // 2)))
        if self.kind == "ivfpq" and self.refine < MAX_REFINE:
            return replace(self, refine=min(MAX_REFINE, self.refine * 2))
        return None

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "hnsw_m": self.hnsw_m, "ef_construction": self.ef_construction,
                "ef_search": self.ef_search, "nlist": self.nlist, "nprobe": self.nprobe,
                "refine": self.refine}


def euclidean_rows(vectors: np.ndarray) -> np.ndarray:
    """[n, dim + 1]: `vectors` with sqrt(R^2 - |x|^2) appended, R the largest row norm (all rows
    then have norm R; the L2-nearest row to [q, 0] has the largest inner product with q)."""
    n, dim = vectors.shape
    norms = _squared_norms(vectors)
    rows = np.empty((n, dim + 1), dtype=np.float32)
    rows[:, :dim] = vectors
    rows[:, dim] = np.sqrt(np.maximum(norms.max(initial=0.0) - norms, 0.0))
    return rows


def _squared_norms(rows: np.ndarray) -> np.ndarray:
    """Each row's squared norm in float64, a block of rows at a time: einsum with a float64 `dtype`
    over float32 rows takes numpy's slow casting path (14-30 s at 10^6 rows against 0.3 s)."""
    blocks = (rows[at:at + 65536].astype(np.float64) for at in range(0, len(rows), 65536))
    return np.concatenate([np.einsum("ij,ij->i", block, block) for block in blocks] or [np.zeros(0)])


def _euclidean(index: Any) -> bool:
    """An index built over `euclidean_rows` (the only L2 indexes built here)."""
    return index.metric_type == _faiss().METRIC_L2


def build_index(vectors: np.ndarray, params: IndexParams = IndexParams()) -> Any:
    """A faiss maximum-inner-product index over `vectors` (rows = items, in column order); query
    it with `search`."""
    faiss = _faiss()
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    n, dim = vectors.shape
    params = params.resolved(n)
    if params.kind == "flat":
        index = faiss.IndexFlatIP(dim)
    elif params.kind == "hnsw":
        index = faiss.IndexHNSWFlat(dim, params.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = params.ef_construction
        index.hnsw.efSearch = params.ef_search
    else:
        nlist = params.nlist
        metric = faiss.METRIC_INNER_PRODUCT
        if params.kind == "ivfpq":
            vectors, dim, metric = euclidean_rows(vectors), dim + 1, faiss.METRIC_L2
        codes = "Flat" if params.kind == "ivf" else f"PQ{pq_subquantizers(dim)}x4fs"
        # the factory's index owns its quantizer (and the re-ranking rows: RFlat)
        index = faiss.index_factory(dim, f"IVF{nlist},{codes}" + (",RFlat" if params.kind == "ivfpq" else ""),
                                    metric)
        faiss.extract_index_ivf(index).cp.niter = IVF_KMEANS_ITER
        rng = np.random.default_rng(params.seed)
        sample = vectors[np.sort(rng.choice(n, min(n, nlist * IVF_TRAIN_PER_LIST), replace=False))]
        index.train(sample)
        set_search_params(index, params)
    index.add(vectors)
    return index


def pq_subquantizers(dim: int) -> int:
    """Sub-quantizers of `ivfpq`'s codes: the fewest that split `dim` evenly into parts of at most
    IVFPQ_SUB_DIMS dimensions (faiss's PQ needs equal parts)."""
    return next(dim // sub for sub in range(min(IVFPQ_SUB_DIMS, dim), 0, -1) if dim % sub == 0)


def serialize(index: Any) -> bytes:
    """faiss's own format: written to a file and read back, which at 200,000 `ivfpq` rows (176 MiB)
    took 0.2-0.7 s against 1.7-2.9 s for `serialize_index` into memory (and `.tobytes()`)."""
    with tempfile.TemporaryDirectory(prefix="batchrec-index-") as folder:
        path = os.path.join(folder, "index.faiss")
        _faiss().write_index(index, path)
        with open(path, "rb") as f:
            return f.read()


def deserialize(data: bytes, *, n_items: int, dim: int) -> Any:
    """An index from `serialize`'s bytes, checked to hold `n_items` vectors of `dim` (+ bias)."""
    faiss = _faiss()
    return _checked(lambda: faiss.deserialize_index(np.frombuffer(data, dtype=np.uint8)), n_items, dim)


def read_index_file(path: str | os.PathLike[str], *, n_items: int, dim: int) -> Any:
    """`deserialize` of a local file, memory-mapped where faiss can (an IVF index's lists, a flat
    or HNSW index's vectors, an `ivfpq` index's re-ranking rows; its fast-scan lists are copied
    into memory: 25 MiB of a 176 MiB file at 200,000 rows): processes that map the same file share
    those pages."""
    faiss = _faiss()
    with open(path, "rb") as f:
        ivf = f.read(2) == b"Iw"  # faiss's IVF type codes ("IwFl", ...): lists mapped with IO_FLAG_MMAP
    # (`ivfpq` is a refine index, "IxRF": IO_FLAG_MMAP_IFC maps its flat rows)
    # (IO_FLAG_MMAP_IFC maps flat and HNSW storage, but makes IVF's mmap fail: one or the other)
    flags = (faiss.IO_FLAG_MMAP if ivf else faiss.IO_FLAG_MMAP_IFC) | faiss.IO_FLAG_READ_ONLY
    return _checked(lambda: faiss.read_index(os.fspath(path), flags), n_items, dim)


def _checked(read: Callable[[], Any], n_items: int, dim: int) -> Any:
    faiss = _faiss()
    try:
        index = read()
    except Exception as exc:  # faiss raises RuntimeError on truncated or foreign bytes
        raise IndexLoadError(f"not a faiss index: {str(exc).splitlines()[0] if str(exc) else exc}") from exc
    if index.metric_type not in (faiss.METRIC_INNER_PRODUCT, faiss.METRIC_L2):
        raise IndexLoadError("index ranks neither by inner product nor by L2 over euclidean rows")
    stored = index.d - _euclidean(index)
    if index.ntotal != n_items or stored != dim:
        raise IndexLoadError(f"index holds {index.ntotal} vectors of dimension {stored}; the model "
                          f"has {n_items} items of dimension {dim}")
    return index


def stored_vectors(index: Any, ids: np.ndarray) -> np.ndarray:
    """[len(ids), dim]: the rows the index holds for `ids`, as given to `build_index` (an IVF
    index needs its direct map, which this makes). Raises IndexLoadError when an index in
    Euclidean form holds rows of unequal norms (not `euclidean_rows`)."""
    ivf = _faiss().try_extract_index_ivf(index)
    if ivf is not None:
        ivf.make_direct_map()
    rows = (np.stack([index.reconstruct(int(i)) for i in ids]) if len(ids)
            else np.zeros((0, index.d), np.float32))
    if not _euclidean(index):
        return rows
    norms = _squared_norms(rows)
    if len(norms) and not np.allclose(norms, norms[0], rtol=1e-4):
        raise IndexLoadError("an L2 index whose rows are not in euclidean form")
    return rows[:, :-1]


def search(index: Any, queries: np.ndarray, k: int, params: Any = None) -> tuple[np.ndarray, np.ndarray]:
    """(scores, ids) [B, k] of any index built here: the best inner products of `queries`
    ([B, dim], as `query_vectors` gives them), -inf / -1 where fewer were found."""
    if not _euclidean(index):
        return index.search(queries, k, params=params)
    wide = np.hstack([queries, np.zeros((len(queries), 1), np.float32)])
    _, found = index.search(wide, k, params=params)
    # the distances rank like the inner products; the scores are the inner products themselves
    rows = index.reconstruct_batch(np.maximum(found, 0).ravel()).reshape(*found.shape, -1)[..., :-1]
    scores = np.einsum("bkd,bd->bk", rows, queries).astype(np.float32)
    scores[found < 0] = -np.inf
    return scores, found


def set_search_params(index: Any, params: IndexParams) -> None:
    """Query-time knobs (not part of the serialised bytes for every index type)."""
    faiss = _faiss()
    if isinstance(index, faiss.IndexHNSW):
        index.hnsw.efSearch = params.ef_search
        return
    if isinstance(index, faiss.IndexRefine):
        index.k_factor = float(params.refine)
    ivf = faiss.try_extract_index_ivf(index)
    if ivf is not None:
        ivf.nprobe = min(params.nprobe, ivf.nlist)


def search_knobs(index: Any) -> dict[str, int]:
    """The query-time knobs an index searches with now (for `/model`)."""
    faiss = _faiss()
    if isinstance(index, faiss.IndexHNSW):
        return {"ef_search": int(index.hnsw.efSearch)}
    ivf = faiss.try_extract_index_ivf(index)
    knobs = {"nprobe": int(ivf.nprobe)} if ivf is not None else {}
    if isinstance(index, faiss.IndexRefine):
        knobs["refine"] = int(index.k_factor)
    return knobs


def index_kind(index: Any) -> str:
    faiss = _faiss()
    if isinstance(index, faiss.IndexHNSW):
        return "hnsw"
    if isinstance(index, faiss.IndexRefine) and faiss.try_extract_index_ivf(index) is not None:
        return "ivfpq"
    if isinstance(index, faiss.IndexIVF):
        return "ivf"
    return "flat"


def _excluding(index: Any, own: np.ndarray) -> tuple[Any, Any]:
    """Search parameters that skip `own` inside the index's search (faiss IDSelector), with the
    index's own query knobs; and the selector, which must outlive the search."""
    faiss = _faiss()
    selector = faiss.IDSelectorNot(faiss.IDSelectorBatch(own))
    if isinstance(index, faiss.IndexHNSW):
        return faiss.SearchParametersHNSW(sel=selector, efSearch=index.hnsw.efSearch), selector
    if isinstance(index, faiss.IndexIVF):
        return faiss.SearchParametersIVF(sel=selector, nprobe=index.nprobe), selector
    if isinstance(index, faiss.IndexRefine):  # the base index's search skips them: the re-ranking
        # sees only its candidates
        base, kept = _excluding(faiss.downcast_index(index.base_index), own)
        params = faiss.IndexRefineSearchParameters(k_factor=index.k_factor, base_index_params=base)
        return params, (base, kept)
    return faiss.SearchParameters(sel=selector), selector


def search_excluding(index: Any, queries: np.ndarray, own: Sequence[np.ndarray], k: int,
                     exact: Callable[[int], tuple[np.ndarray, np.ndarray]] | None = None
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Top-k items per query, the query's own items excluded inside the search (so the cost does
    not grow with them), k results whenever k other items exist: a row left with fewer (an
    approximate index can return fewer than asked) is answered by `exact(row)` instead, the
    caller's exact top-k of that query with its own items excluded (None: left short, as recall
    measures the index alone).

    Returns ([B, k] int64 column indices, [B, k] float32 scores), -1 / -inf padded only where
    the catalog has fewer than k items besides the user's own.
    """
    n = index.ntotal
    size = len(own)
    k = min(k, n)
    out_idx = np.full((size, k), -1, dtype=np.int64)
    out_val = np.full((size, k), -np.inf, dtype=np.float32)
    if size == 0 or k == 0:
        return out_idx, out_val
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    plain = [row for row in range(size) if not len(own[row])]
    if plain:  # no items to exclude: one batched search
        out_val[plain], out_idx[plain] = search(index, queries[plain], k)
    excluding = [row for row in range(size) if len(own[row])]
    if isinstance(index, _faiss().IndexRefine):
        shared = [row for row in excluding if len(own[row]) <= OVERFETCH_MAX_OWN]
        excluding = [row for row in excluding if len(own[row]) > OVERFETCH_MAX_OWN]
        for row, found, values in _overfetched(index, queries, own, shared, k):
            out_idx[row, :len(found)], out_val[row, :len(values)] = found, values
    for row in excluding:
        mine = np.asarray(own[row], dtype=np.int64)
        params, _selector = _excluding(index, mine)
        values, found = search(index, queries[row:row + 1], k, params)
        out_idx[row], out_val[row] = found[0], values[0]
    short = (out_idx >= 0).sum(axis=1) < np.minimum(k, n - np.array([len(o) for o in own]))
    for row in np.flatnonzero(short) if exact is not None else ():
        chosen, values = exact(int(row))
        out_idx[row], out_val[row] = -1, -np.inf
        out_idx[row, :len(chosen[:k])] = chosen[:k]
        out_val[row, :len(values[:k])] = values[:k]
    out_val[out_idx < 0] = -np.inf
    return out_idx, out_val


def _overfetched(index: Any, queries: np.ndarray, own: Sequence[np.ndarray], rows: list[int], k: int
                 ) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """(row, top-k items, scores) of `rows` from one search of a refine index that asks each row
    for `k + w` results, `w` the most own items among the rows, and drops the row's own items
    afterwards. The base search returns `refine * k + w` candidates, so every row keeps at least
    the `refine * k` candidates that are not its own (as a selector search gives it) to re-rank."""
    if not rows:
        return
    faiss = _faiss()
    widest = max(len(own[row]) for row in rows)
    wide = min(k + widest, index.ntotal)
    ivf = faiss.try_extract_index_ivf(index)
    base = faiss.SearchParametersIVF(nprobe=ivf.nprobe) if ivf is not None else None
    # faiss takes int(wide * k_factor) candidates: the half keeps the rounding from losing one
    params = faiss.IndexRefineSearchParameters(
        k_factor=(k * index.k_factor + widest + 0.5) / wide, base_index_params=base)
    values, found = search(index, queries[rows], wide, params)
    # one comparison for the whole batch (np.isin per row cost a fifth of the search at 16 users)
    mine = np.full((len(rows), max(widest, 1)), -1, dtype=np.int64)
    for at, row in enumerate(rows):
        mine[at, :len(own[row])] = own[row]
    keep = (found >= 0) & ~(found[:, :, None] == mine[:, None, :]).any(axis=2)
    keep &= np.cumsum(keep, axis=1) <= k
    for at, row in enumerate(rows):
        yield row, found[at][keep[at]], values[at][keep[at]]


def exact_top_k(vectors: np.ndarray, query: np.ndarray, own: np.ndarray, k: int
                ) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k of one query over all vectors, `own` excluded (the fallback and the reference)."""
    scores = vectors @ np.asarray(query, dtype=np.float32)
    if len(own):
        scores[own] = -np.inf
    k = min(k, len(scores))
    top = np.argpartition(-scores, k - 1)[:k] if k < len(scores) else np.arange(len(scores))
    top = top[np.argsort(-scores[top], kind="stable")]
    top = top[np.isfinite(scores[top])]
    return top.astype(np.int64), scores[top].astype(np.float32)


def recall_at_k(approx: np.ndarray, exact: np.ndarray) -> float:
    """Mean over users of |approx top-k ∩ exact top-k| / |exact top-k| (padding -1 ignored)."""
    hits, total = 0, 0
    for a, e in zip(approx, exact, strict=True):
        e = e[e >= 0]
        if len(e) == 0:
            continue
        hits += len(np.intersect1d(a[a >= 0], e))
        total += len(e)
    return hits / total if total else 1.0


@dataclass(frozen=True)
class BuiltIndex:
    data: bytes
    params: IndexParams
    n_items: int
    dim: int
    build_seconds: float

    def to_dict(self) -> dict[str, Any]:
        return {**self.params.to_dict(), "n_items": self.n_items, "dim": self.dim,
                "build_seconds": round(self.build_seconds, 3), "size_bytes": len(self.data)}


def build_for_model(model: torch.nn.Module, params: IndexParams = IndexParams()) -> BuiltIndex:
    """The index of a trained model's decoder, serialised, with its build time."""
    started = time.perf_counter()
    vectors = decoder_vectors(model)
    params = params.resolved(vectors.shape[0])  # the record names the kind built, not `auto`
    index = build_index(vectors, params)
    data = serialize(index)
    return BuiltIndex(data, params, vectors.shape[0], vectors.shape[1], time.perf_counter() - started)


@torch.no_grad()
def user_codes(model: torch.nn.Module, fold_in: Any) -> np.ndarray:
    """Posterior means z [B, latent] of CSR rows (eval mode; the decoder's input)."""
    from recvae.sparse import SparseBatch

    was_training = model.training
    model.eval()
    try:
        device = next(model.parameters()).device
        mu, _ = model.encoder(SparseBatch.from_csr(fold_in, device))
        return mu.to("cpu", torch.float32).numpy()
    finally:
        model.train(was_training)


def measure_recall(model: torch.nn.Module, data: bytes, fold_in: Any, k: int = 20,
                   params: IndexParams = IndexParams()) -> dict[str, Any]:
    """recall@k of the serialised index against exact decoder scores, over the users of `fold_in`
    (CSR, held-out users' folded-in items, which are excluded as the server excludes them)."""
    import scipy.sparse as sp

    fold_in = sp.csr_matrix(fold_in)
    vectors = decoder_vectors(model)
    index = deserialize(data, n_items=vectors.shape[0], dim=vectors.shape[1])
    set_search_params(index, params)
    rows = [r for r in range(fold_in.shape[0]) if fold_in.indptr[r + 1] > fold_in.indptr[r]]
    if not rows:
        return {"recall": None, "users": 0, "k": k}
    matrix = fold_in[rows]
    queries = query_vectors(user_codes(model, matrix))
    own = [matrix.indices[matrix.indptr[r]:matrix.indptr[r + 1]].astype(np.int64) for r in range(len(rows))]
    approx, _ = search_excluding(index, queries, own, k)  # the index alone: no fallback
    exact = np.stack([_pad(exact_top_k(vectors, q, o, k)[0], k) for q, o in zip(queries, own, strict=True)])
    return {"recall": recall_at_k(approx, exact), "users": len(rows), "k": k}


def _pad(values: np.ndarray, k: int) -> np.ndarray:
    out = np.full(k, -1, dtype=np.int64)
    out[:len(values)] = values
    return out
