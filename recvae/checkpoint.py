"""Training checkpoints: Adam's moments, kept next to an artifact (not inside it), so that the
next warm run continues the optimiser where the last run left it.

Why carry them. Fresh Adam moments make the first steps of a run move every weight by about the
learning rate, whatever its gradient: on a converged model that is a jolt the next epochs must
undo, and warm runs are only a few epochs long. Carried moments keep the steps of converged
weights small (their mean gradient is near zero against its spread), while the rows of items new
this hour start with zero moments under the run's long step count, so Adam's bias correction
no longer damps them and they move several times faster than the rest.

Format: safetensors tensors `exp_avg.<parameter>` and `exp_avg_sq.<parameter>` (the model's
state-dict names) and a JSON header with each parameter's step count and a sha256 over the header
and every tensor: a signed file (recvae.signed), as artifacts are; never pickle.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from recvae.model import RecVAE
from recvae.signed import SignedFormat, dump_signed
from recvae.warm import map_item_rows, map_vocabulary

FORMAT_NAME = "batchrec-recvae-moments"
FORMAT_VERSION = 1


class CheckpointError(ValueError):
    """The bytes are not a readable checkpoint, or the moments do not fit the model."""


_FORMAT = SignedFormat(FORMAT_NAME, FORMAT_VERSION, CheckpointError, "moments checkpoint")


@dataclass
class OptimizerMoments:
    """Adam's state per model parameter, keyed by the model's state-dict names."""

    exp_avg: dict[str, torch.Tensor]
    exp_avg_sq: dict[str, torch.Tensor]
    steps: dict[str, float]

    def for_vocabulary(self, previous_item_ids: np.ndarray, item_ids: np.ndarray) -> OptimizerMoments:
        """The moments over `item_ids`: kept items' rows copied, new items' rows zero (as
        `warm_start` maps the weights)."""
        vocab = map_vocabulary(previous_item_ids, item_ids)
        return OptimizerMoments(map_item_rows(self.exp_avg, vocab), map_item_rows(self.exp_avg_sq, vocab),
                                dict(self.steps))

    def check_fits(self, model: RecVAE) -> None:
        """CheckpointError unless there are moments of every parameter of `model`, of its shapes."""
        params = dict(model.named_parameters())
        if not set(params) == set(self.exp_avg) == set(self.exp_avg_sq) == set(self.steps):
            raise CheckpointError("the checkpoint's parameters are not the model's")
        for name, p in params.items():
            if self.exp_avg[name].shape != p.shape or self.exp_avg_sq[name].shape != p.shape:
                raise CheckpointError(f"{name}: moments of shape {tuple(self.exp_avg[name].shape)}, "
                                      f"the model's is {tuple(p.shape)}")


def dump_checkpoint(moments: OptimizerMoments) -> bytes:
    tensors = {f"{kind}.{name}": t.detach().cpu().contiguous()
               for kind, group in (("exp_avg", moments.exp_avg), ("exp_avg_sq", moments.exp_avg_sq))
               for name, t in group.items()}
    meta = {"format": FORMAT_NAME, "format_version": FORMAT_VERSION,
            "steps": {k: float(v) for k, v in moments.steps.items()}}
    return dump_signed(meta, tensors)


def load_checkpoint(data: bytes) -> OptimizerMoments:
    """The moments in `data`; CheckpointError when it is truncated, tampered with or not ours."""
    meta, tensors = _FORMAT.load(data)
    groups: dict[str, dict[str, torch.Tensor]] = {"exp_avg": {}, "exp_avg_sq": {}}
    for key, tensor in tensors.items():
        kind, _, name = key.partition(".")
        if kind not in groups:
            raise CheckpointError(f"unexpected tensor {key!r} in a moments checkpoint")
        groups[kind][name] = tensor
    steps = meta.get("steps")
    if not isinstance(steps, dict):
        raise CheckpointError("moments checkpoint without step counts")
    return OptimizerMoments(groups["exp_avg"], groups["exp_avg_sq"], dict(steps))
