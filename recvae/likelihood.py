"""Decoder + multinomial negative log-likelihood as one autograd function with reusable buffers.

The [batch, n_items] logits are the only large tensors in a training step. Composed from stock
ops, one step allocates half a dozen of them (logits, exp, softmax, the scattered target
gradient, their sum...); each fresh multi-MB allocation is page-faulted in by the kernel, which on
a 2-core CPU costs more than the matmuls themselves. Here forward and backward run in two
buffers owned by the caller, so a step touches no new large memory, and the dense input matrix
never exists: the target term is a gather/scatter on the user's non-zeros.

Mixed precision (a workspace built with `low_precision=torch.bfloat16`): the three matmuls (logits,
the gradient to z, the weight gradient) run in bf16 through their own reused bf16 buffers, while
the bias, the log-softmax, the likelihood and every gradient that reaches the optimiser stay
float32. A bf16 logit carries ~3 significant digits, enough for a training signal, which is why
only training uses it: ranking (evaluation, inference) always scores in float32.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from recvae.sparse import SparseBatch


def accumulate_grad(param: torch.Tensor, add: Callable[[torch.Tensor], object]) -> None:
    """Apply `add` to param.grad in place, creating a zero .grad first if there is none."""
    if param.grad is None:
        param.grad = torch.zeros_like(param)
    add(param.grad)


class LogitsWorkspace:
    """Two [max_batch, n_items] float buffers reused by every training step (plus, in mixed
    precision, a bf16 one of that shape and bf16 copies of the decoder weight and its gradient)."""

    def __init__(
        self,
        max_batch: int,
        n_items: int,
        device: torch.device,
        low_precision: torch.dtype | None = None,
    ) -> None:
        self.logits = torch.empty(max_batch, n_items, device=device)
        self.log_probs = torch.empty(max_batch, n_items, device=device)
        self.low_precision = low_precision
        self._low: dict[str, torch.Tensor] = {}
        if low_precision is not None:
            self._low["logits"] = torch.empty(max_batch, n_items, device=device, dtype=low_precision)

    def views(self, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.logits[:batch], self.log_probs[:batch]

    def low(self, name: str, shape: tuple[int, ...]) -> torch.Tensor:
        """A reused low-precision buffer of `shape` (views of the first one of that name)."""
        buf = self._low.get(name)
        if buf is None or buf.shape[1:] != shape[1:] or buf.shape[0] < shape[0]:
            buf = torch.empty(shape, device=self.logits.device, dtype=self.low_precision)
            self._low[name] = buf
        return buf[: shape[0]]


class _DecoderNLL(torch.autograd.Function):
    @staticmethod
    def forward(  # type: ignore[override]
        ctx: torch.autograd.function.FunctionCtx,
        z: torch.Tensor,
        weight: torch.Tensor,
        bias: torch.Tensor,
        rows: torch.Tensor,
        indices: torch.Tensor,
        values: torch.Tensor,
        counts: torch.Tensor,
        workspace: LogitsWorkspace,
    ) -> torch.Tensor:
        logits, log_probs = workspace.views(z.shape[0])
        if workspace.low_precision is None:
            torch.addmm(bias, z, weight.t(), out=logits)
        else:
            weight_low = workspace.low("weight", tuple(weight.shape))
            weight_low.copy_(weight)
            logits_low = workspace.low("logits", tuple(logits.shape))
            torch.mm(z.to(workspace.low_precision), weight_low.t(), out=logits_low)
            # The bias is added in float32: a bf16 sum would round the popularity prior away.
            torch.add(logits_low, bias, out=logits)
        torch.ops.aten._log_softmax.out(logits, 1, False, out=log_probs)
        picked = log_probs[rows, indices] * values
        nll = torch.zeros(z.shape[0], device=z.device, dtype=z.dtype).index_add_(0, rows, -picked)
        ctx.save_for_backward(z, weight, rows, indices, values, counts)
        ctx.log_probs = log_probs
        ctx.weight, ctx.bias, ctx.workspace = weight, bias, workspace
        return nll

    @staticmethod
    def backward(  # type: ignore[override]
        ctx: torch.autograd.function.FunctionCtx, grad_nll: torch.Tensor
    ) -> tuple[torch.Tensor | None, ...]:
        z, weight, rows, indices, values, counts = ctx.saved_tensors
        # d nll_u / d logit_ui = counts_u * softmax_ui - x_ui, computed in place.
        grad = ctx.log_probs.exp_()
        grad.mul_((grad_nll * counts)[:, None])
        grad.index_put_((rows, indices), -(grad_nll[rows] * values), accumulate=True)
        workspace: LogitsWorkspace = ctx.workspace
        if workspace.low_precision is None:
            grad_z = grad @ weight if ctx.needs_input_grad[0] else None
            # Weight and bias gradients are added straight into their .grad buffers (what
            # autograd's accumulation would do) so no n_items x latent gradient is allocated.
            if ctx.needs_input_grad[1]:
                accumulate_grad(ctx.weight, lambda g: torch.addmm(g, grad.t(), z, out=g))
        else:
            grad_z = _low_precision_backward(ctx, grad, z, workspace)
        if ctx.needs_input_grad[2]:
            accumulate_grad(ctx.bias, lambda g: g.add_(grad.sum(0)))
        ctx.log_probs = ctx.weight = ctx.bias = ctx.workspace = None
        return grad_z, None, None, None, None, None, None, None


def _low_precision_backward(
    ctx: torch.autograd.function.FunctionCtx,
    grad: torch.Tensor,
    z: torch.Tensor,
    workspace: LogitsWorkspace,
) -> torch.Tensor | None:
    """The two gradient matmuls in bf16; results go back to float32 (z's grad, weight's .grad)."""
    grad_low = workspace.low("logits", tuple(grad.shape))
    grad_low.copy_(grad)
    # The forward pass left the bf16 weight copy in the workspace; nothing has changed it since.
    weight_low = workspace.low("weight", tuple(ctx.weight.shape))
    grad_z = (grad_low @ weight_low).to(z.dtype) if ctx.needs_input_grad[0] else None
    if ctx.needs_input_grad[1]:
        weight_grad = workspace.low("weight_grad", tuple(ctx.weight.shape))
        torch.mm(grad_low.t(), z.to(workspace.low_precision), out=weight_grad)
        accumulate_grad(ctx.weight, lambda g: g.add_(weight_grad))
    return grad_z


def decoder_nll(
    z: torch.Tensor,
    decoder: torch.nn.Linear,
    batch: SparseBatch,
    workspace: LogitsWorkspace,
) -> torch.Tensor:
    """Per-user -sum_i x_ui log softmax(decoder(z_u))_i. Call backward before the next call
    that shares `workspace`: the backward pass reads the buffers the forward pass filled."""
    return _DecoderNLL.apply(
        z,
        decoder.weight,
        decoder.bias,
        batch.rows,
        batch.indices,
        batch.values,
        batch.counts,
        workspace,
    )
