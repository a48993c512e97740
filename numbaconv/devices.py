"""Which devices exist and where an array lives.

The CPU engine is always there. The CUDA engine has not landed yet, so
``device="cuda"`` and GPU-resident inputs raise ``RuntimeError`` saying so.
"""
import os

DEVICES = ("auto", "cpu", "cuda")
ENVIRONMENT_VARIABLE = "NUMBACONV_DEVICE"


def available_devices() -> tuple[str, ...]:
    """The devices numbaconv can run on here."""
    return ("cpu",)


def on_gpu(array) -> bool:
    return array is not None and hasattr(array, "__cuda_array_interface__")


def resolve_device(device, *arrays) -> str:
    """The device to run on: "cpu" or "cuda".

    ``"auto"`` runs where the data is (arrays with ``__cuda_array_interface__``
    live on the GPU), else on ``$NUMBACONV_DEVICE``, else on the CPU.
    """
    if device not in DEVICES:
        raise ValueError(f"device must be one of {DEVICES}, got {device!r}")
    if device == "auto":
        if any(on_gpu(a) for a in arrays):
            device = "cuda"
        else:
            device = os.environ.get(ENVIRONMENT_VARIABLE, "cpu") or "cpu"
            if device not in ("cpu", "cuda"):
                raise ValueError(f"${ENVIRONMENT_VARIABLE} must be 'cpu' or 'cuda', got {device!r}")
    if device not in available_devices():
        raise RuntimeError(f"device {device!r} is not available: numbaconv found no usable GPU "
                           f"(the CUDA engine is not part of this build); use device='cpu'")
    if any(on_gpu(a) for a in arrays):
        raise RuntimeError("GPU arrays need the CUDA engine, which this build does not have; "
                           "copy them to the host first")
    return device
