"""Sparse user batches that stay on the device.

A batch is kept in the layout `torch.nn.functional.embedding_bag` consumes (flat item indices,
per-row offsets, per-entry weights), which makes the first encoder layer a sparse gather-sum
instead of a dense [batch, n_items] matmul.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch


@dataclass
class SparseBatch:
    indices: torch.Tensor  # [nnz] int64 item column of each entry
    offsets: torch.Tensor  # [B] int64 start of each row in `indices`
    rows: torch.Tensor  # [nnz] int64 batch row of each entry
    values: torch.Tensor  # [nnz] float32
    counts: torch.Tensor  # [B] float32 sum of values per row (items per user for binary data)
    size: int

    @classmethod
    def from_csr(cls, matrix: sp.csr_matrix, device: torch.device | str) -> SparseBatch:
        matrix = sp.csr_matrix(matrix)
        lengths = np.diff(matrix.indptr)
        rows = np.repeat(np.arange(matrix.shape[0], dtype=np.int64), lengths)
        values = torch.from_numpy(np.asarray(matrix.data, dtype=np.float32)).to(device)
        rows_t = torch.from_numpy(rows).to(device)
        counts = torch.zeros(matrix.shape[0], device=device).index_add_(0, rows_t, values)
        return cls(
            indices=torch.from_numpy(matrix.indices.astype(np.int64)).to(device),
            offsets=torch.from_numpy(matrix.indptr[:-1].astype(np.int64)).to(device),
            rows=rows_t,
            values=values,
            counts=counts,
            size=int(matrix.shape[0]),
        )


class DeviceCSR:
    """A CSR matrix resident on the device, sliced into row batches without host round-trips.

    Batch sizes in non-zeros are computed on the host once per pass (from the host copy of
    indptr), so slicing needs no device-to-host synchronisation per batch.
    """

    def __init__(self, matrix: sp.csr_matrix, device: torch.device | str) -> None:
        matrix = sp.csr_matrix(matrix)
        self.shape = matrix.shape
        self.device = torch.device(device)
        self.lengths = np.diff(matrix.indptr).astype(np.int64)
        self.indptr = torch.from_numpy(matrix.indptr.astype(np.int64)).to(self.device)
        self.indices = torch.from_numpy(matrix.indices.astype(np.int64)).to(self.device)
        self.values = torch.from_numpy(np.asarray(matrix.data, dtype=np.float32)).to(self.device)

    @property
    def n_rows(self) -> int:
        return int(self.shape[0])

    def batch(self, rows: torch.Tensor, nnz: int) -> SparseBatch:
        """Rows `rows` (device tensor) whose total number of non-zeros is `nnz`."""
        starts = self.indptr[rows]
        lengths = self.indptr[rows + 1] - starts
        offsets = torch.cumsum(lengths, 0) - lengths
        position = torch.repeat_interleave(starts - offsets, lengths, output_size=nnz)
        position += torch.arange(nnz, device=self.device)
        batch_rows = torch.repeat_interleave(
            torch.arange(len(rows), device=self.device), lengths, output_size=nnz
        )
        values = self.values[position]
        counts = torch.zeros(len(rows), device=self.device).index_add_(0, batch_rows, values)
        return SparseBatch(
            indices=self.indices[position],
            offsets=offsets,
            rows=batch_rows,
            values=values,
            counts=counts,
            size=len(rows),
        )

    def iterate(self, order: np.ndarray, batch_size: int) -> Iterator[tuple[torch.Tensor, SparseBatch]]:
        """Yield (row ids on device, batch) for consecutive chunks of `order`."""
        order = np.asarray(order, dtype=np.int64)
        starts = np.arange(0, len(order), batch_size)
        if len(starts) == 0:
            return
        nnz = np.add.reduceat(self.lengths[order], starts)
        order_t = torch.from_numpy(order).to(self.device)
        for start, batch_nnz in zip(starts, nnz, strict=True):
            rows = order_t[start : start + batch_size]
            yield rows, self.batch(rows, int(batch_nnz))
