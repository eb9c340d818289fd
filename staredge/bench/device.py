"""Device and execution-provider selection, and how to wait for a GPU before reading a clock.

Kept free of side effects so that the selection can be tested with mocked availability
on machines without a GPU: callers pass in what is available (``cuda_available``,
``available_providers``) or let the ``detect_*`` helpers ask torch / ONNX Runtime.
"""

from __future__ import annotations

from typing import Any, Callable

from staredge.errors import ConfigError, StarEdgeError

#: ONNX Runtime provider names by the accelerator a backend spec names.
ORT_PROVIDER_CHAINS = {
    "cpu": ("CPUExecutionProvider",),
    "cuda": ("CUDAExecutionProvider", "CPUExecutionProvider"),
    "tensorrt": ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"),
}


class DeviceUnavailableError(StarEdgeError):
    """A benchmark asked for a device (CUDA, TensorRT) this machine or install cannot give."""


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
    :class:`DeviceUnavailableError` rather than silently timing the CPU.
    """
    if requested == "auto":
        return "cuda" if cuda_available else "cpu"
    if requested == "cpu":
        return "cpu"
    if requested in ("cuda", "tensorrt"):
        if not cuda_available:
            raise DeviceUnavailableError(
                f"device '{requested}' was asked for but no CUDA device is available here; "
                "run on a machine with an NVIDIA GPU and `pip install -c constraints.txt 'staredge[gpu]'`, "
                "or use --protocol paper-cpu / --device cpu"
            )
        return "cuda"
    raise ConfigError(f"unknown device '{requested}': use cpu, cuda, tensorrt or auto")


def ort_providers(accelerator: str, available_providers: list[str]) -> list[str]:
    """The ONNX Runtime provider list for ``accelerator`` ("cpu", "cuda", "tensorrt").

    Every provider of the chain except the CPU fallback must be available; otherwise
    :class:`DeviceUnavailableError` names the missing one and the extra to install
    (``onnxruntime-gpu`` replaces ``onnxruntime``).
    """
    try:
        chain = ORT_PROVIDER_CHAINS[accelerator]
    except KeyError:
        raise ConfigError(
            f"unknown ONNX Runtime accelerator '{accelerator}': use one of {', '.join(ORT_PROVIDER_CHAINS)}"
        ) from None
    missing = [p for p in chain if p != "CPUExecutionProvider" and p not in available_providers]
    if missing:
        raise DeviceUnavailableError(
            f"ONNX Runtime provider(s) {', '.join(missing)} not available (available: "
            f"{', '.join(available_providers) or 'none'}); install onnxruntime-gpu with "
            "`pip install -c constraints.txt 'staredge[gpu]'` on a machine with an NVIDIA GPU"
        )
    return list(chain)


def torch_synchronizer(device: str, torch_module: Any = None) -> Callable[[], None] | None:
    """``torch.cuda.synchronize`` for CUDA (kernels are launched asynchronously), else None."""
    if device != "cuda":
        return None
    if torch_module is None:
        import torch as torch_module
    return torch_module.cuda.synchronize


class OrtIoBindingRunner:
    """One ONNX Runtime inference with IO binding: input and output stay on the device.

    On CUDA, copying the output back to the host in every call would time PCIe transfers,
    and ``session.run`` returns only after that copy. With IO binding the input is bound
    once as a device tensor and the output is bound to device memory; ``sync()`` calls
    ``synchronize_outputs`` so the clock is read after the GPU has finished.
    """

    def __init__(self, session: Any, x: Any, device: str, ort_module: Any = None) -> None:
        if ort_module is None:
            import onnxruntime as ort_module
        self.session = session
        self.binding = session.io_binding()
        device_type = "cuda" if device == "cuda" else "cpu"
        self.input_value = ort_module.OrtValue.ortvalue_from_numpy(x, device_type, 0)
        self.binding.bind_ortvalue_input(session.get_inputs()[0].name, self.input_value)
        for out in session.get_outputs():
            self.binding.bind_output(out.name, device_type)

    def __call__(self) -> None:
        """Run once on the bound input; outputs stay bound on the device."""
        self.session.run_with_iobinding(self.binding)

    def sync(self) -> None:
        """Wait until the bound outputs are complete."""
        self.binding.synchronize_outputs()

    def outputs(self) -> list[Any]:
        """The outputs of the last run, copied to host numpy arrays."""
        return [v.numpy() for v in self.binding.get_outputs()]
