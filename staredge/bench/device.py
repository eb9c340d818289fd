"""Which device a benchmark runs on, and how to wait for a GPU before reading a clock.

Kept free of side effects so that the selection can be tested with mocked availability
on machines without a GPU: callers pass in what is available (``cuda_available``) or let
the ``detect_*`` helpers ask torch / ONNX Runtime. ONNX Runtime provider chains are chosen
in one place, :func:`staredge.runtimes.onnxruntime.select_providers`.
"""

from __future__ import annotations

from typing import Any, Callable

from staredge.errors import ConfigError, DeviceError

def detect_torch_cuda() -> bool:
    """Whether PyTorch can run on a CUDA device here."""
    try:
        import torch

        return bool(torch.cuda.is_available())
    except Exception:  # a broken driver counts as "no CUDA", never as a crash
        return False


def detect_ort_providers() -> list[str]:
    """ONNX Runtime's available execution providers (empty without ONNX Runtime)."""
    try:
        import onnxruntime as ort
    except ImportError:
        return []
    return list(ort.get_available_providers())


def resolve_device(requested: str, cuda_available: bool) -> str:
    """``"cpu"`` or ``"cuda"`` for a requested ``"cpu"``, ``"cuda"``/``"tensorrt"`` or ``"auto"``.

    ``auto`` picks CUDA when available. Asking for CUDA without it raises
    :class:`DeviceError` rather than silently timing the CPU.
    """
    if requested == "auto":
        return "cuda" if cuda_available else "cpu"
    if requested == "cpu":
        return "cpu"
    if requested in ("cuda", "tensorrt"):
        if not cuda_available:
            raise DeviceError(
                f"device '{requested}' was asked for but no CUDA device is available here; "
                "run on a machine with an NVIDIA GPU and `pip install -c constraints.txt 'staredge[gpu]'`, "
                "or use --protocol paper-cpu / --device cpu"
            )
        return "cuda"
    raise ConfigError(f"unknown device '{requested}': use cpu, cuda, tensorrt or auto")


def torch_synchronizer(device: str, torch_module: Any = None) -> Callable[[], None] | None:
    """``torch.cuda.synchronize`` for CUDA (kernels are launched asynchronously), else None."""
    if device != "cuda":
        return None
    if torch_module is None:
        import torch as torch_module
    return torch_module.cuda.synchronize
