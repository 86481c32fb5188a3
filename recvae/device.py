"""Device selection and mixed precision, shared by training, evaluation and inference."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch


class CudaUnavailableError(RuntimeError):
    """CUDA was asked for explicitly but this process cannot use it."""


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def resolve_device(device: str | torch.device | None) -> torch.device:
    """The torch device for `device` (None: CUDA when present, else CPU).

    Asking for CUDA where there is none raises CudaUnavailableError up front, instead of torch's
    AssertionError ("Torch not compiled with CUDA enabled") from deep inside the first `.to()`.
    """
    dev = torch.device(device if device is not None else default_device())
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            build = "CPU-only build of torch" if torch.version.cuda is None else "no usable GPU"
            raise CudaUnavailableError(
                f"device {str(dev)!r} was requested but CUDA is unavailable ({build}, torch "
                f"{torch.__version__}); use device='cpu' or run on a machine with a GPU"
            )
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise CudaUnavailableError(
                f"device {str(dev)!r} was requested but CUDA is unavailable at that index: "
                f"{torch.cuda.device_count()} GPU(s) visible"
            )
    return dev


# bf16 keeps fp32's exponent range, so unlike fp16 it needs no loss scaling; matmuls run on
# tensor cores (CUDA) or AVX512-BF16/AMX units (recent x86 CPUs).
LOW_PRECISION = torch.bfloat16


def low_precision_dtype(enabled: bool) -> torch.dtype | None:
    return LOW_PRECISION if enabled else None


@contextlib.contextmanager
def autocast(device: torch.device, enabled: bool) -> Iterator[None]:
    """torch.autocast in bf16 for the encoder's dense layers when `enabled`, else nothing."""
    if not enabled:
        yield
        return
    with torch.autocast(device_type=device.type, dtype=LOW_PRECISION):
        yield
