"""Which devices exist, where an array lives, and moving arrays to the GPU.

The CPU is always there. ``"cuda"`` is there when ``numba.cuda`` finds a
usable GPU, or when Numba's CUDA simulator is on (``NUMBA_ENABLE_CUDASIM=1``
set before Numba is imported; the kernels then run as slow Python threads,
for testing). ``numba.cuda`` is imported only when a GPU is asked for.

Where a call runs (:func:`resolve_device`):

- ``device="auto"``: on the GPU when any operand is a GPU array (it has
  ``__cuda_array_interface__``, or is a Numba device array), else on
  ``$NUMBACONV_DEVICE`` when set, else on the CPU.
- ``device="cuda"``: on the GPU; NumPy operands are copied in and the result
  copied out. With no usable GPU this is a ``RuntimeError`` saying so.
- ``device="cpu"`` with a GPU operand is a ``ValueError``: copy it to the
  host first.

Results come back as the operands came in: all NumPy in, NumPy out; any GPU
operand in, a Numba device array out. Mixed operands (some on the host, some
on the GPU) run on the GPU, the host ones copied in. GPU operands are used
in place (CuPy arrays and PyTorch CUDA tensors through the CUDA Array
Interface, no copy); one that is not C-contiguous is copied into a
contiguous array on the GPU.
"""
import functools
import os
import platform

import numpy as np

DEVICES = ("auto", "cpu", "cuda")
ENVIRONMENT_VARIABLE = "NUMBACONV_DEVICE"


@functools.cache
def cuda_usable() -> bool:
    """True when numba.cuda can run kernels here: a real GPU, or the simulator."""
    try:
        from numba import cuda
        return bool(cuda.is_available())
    except Exception:   # numba.cuda missing or its driver failing to load both mean "no GPU"
        return False


def cuda_simulated() -> bool:
    """True when "cuda" is Numba's CUDA simulator (``NUMBA_ENABLE_CUDASIM=1``), not a GPU."""
    from numba import config
    return bool(config.ENABLE_CUDASIM)


def available_devices() -> tuple[str, ...]:
    """The devices numbaconv can run on here: ("cpu",) or ("cpu", "cuda")."""
    return ("cpu", "cuda") if cuda_usable() else ("cpu",)


def on_gpu(array) -> bool:
    """True for GPU arrays: Numba device arrays and anything with the CUDA Array Interface."""
    if array is None or type(array) is np.ndarray:   # the common case, without attribute lookups
        return False
    return hasattr(array, "__cuda_array_interface__") or bool(getattr(array, "__cuda_ndarray__", False))


def _no_gpu_error():
    return RuntimeError("device 'cuda' is not available: numbaconv found no usable GPU "
                        "(numba.cuda.is_available() is False); use device='cpu', or set "
                        "NUMBA_ENABLE_CUDASIM=1 to run the CUDA kernels in Numba's simulator")


def resolve_device(device, *arrays) -> str:
    """The device to run on, "cpu" or "cuda" (rules in the module docstring)."""
    requested = device.lower() if isinstance(device, str) else device
    if requested not in DEVICES:
        raise ValueError(f"device must be one of {DEVICES} (any case), got {device!r}")
    device = requested
    gpu_operands = any(on_gpu(a) for a in arrays)
    if device == "auto":
        if gpu_operands:
            device = "cuda"
        else:
            named = os.environ.get(ENVIRONMENT_VARIABLE, "").strip()
            device = named.lower() or "cpu"
            if device not in ("cpu", "cuda"):
                raise ValueError(f"${ENVIRONMENT_VARIABLE} must be 'cpu' or 'cuda' (any case), got {named!r}")
    if device == "cuda" and not cuda_usable():
        raise _no_gpu_error()
    if device == "cpu" and gpu_operands:
        raise ValueError("device='cpu' was given GPU arrays; copy them to the host first "
                         "or use device='cuda' / 'auto'")
    return device


def gpu_view(array):
    """A GPU operand as a Numba device array, sharing its memory (no copy).

    Numba device arrays pass as they are; other objects go through
    ``numba.cuda.as_cuda_array`` (the CUDA Array Interface).
    """
    if getattr(array, "__cuda_ndarray__", False):
        return array
    if not cuda_usable():
        raise _no_gpu_error()
    from numba import cuda
    if not hasattr(cuda, "as_cuda_array"):
        raise TypeError(f"{type(array).__name__} is a foreign GPU array, which Numba's CUDA "
                        "simulator cannot read; pass a numba.cuda device array")
    try:
        return cuda.as_cuda_array(array)
    except Exception as error:
        raise TypeError(f"cannot read {type(array).__name__} through its "
                        f"__cuda_array_interface__: {error}") from None


def to_gpu(array, shape):
    """``array`` as a C-contiguous device array of ``shape`` (same size): host arrays are
    copied in, GPU arrays used in place or, when not contiguous, copied on the GPU."""
    from numba import cuda
    if not on_gpu(array):
        return cuda.to_device(np.ascontiguousarray(array)).reshape(shape)
    array = gpu_view(array)
    if not array.is_c_contiguous():
        from .cuda.common import contiguous_copy
        array = contiguous_copy(array)
    return array.reshape(shape)


def empty(shape, dtype):
    """An uninitialised device array."""
    from numba import cuda
    return cuda.device_array(shape, dtype)


def to_host_if(result, host: bool):
    """``result`` (a device array or None) copied to NumPy when ``host`` is true."""
    if result is None or not host:
        return result
    return result.copy_to_host()


def cpu_model() -> str:
    """The CPU's model name (Linux: /proc/cpuinfo), else what the platform module says."""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
