"""numbaconv: convolutions and their gradients, compiled by Numba.

    import numbaconv as nc
    y = nc.conv2d(x, w, bias, stride=1, padding="same")
    gx, gw, gb = nc.conv2d_backward(gy, x, w, padding="same")

See numbaconv.functional for the functions, numbaconv.reference for the
float64 oracle they are checked against.
"""
from .compile_cache import CompilingNotice, ensure_writable as _ensure_writable_cache
from .compile_cache import watch_compilation as _watch_compilation

_ensure_writable_cache()   # before the first kernel is defined
_watch_compilation()

from . import reference  # noqa: E402
from .devices import available_devices as devices
from .dispatch import algorithms
from .functional import *  # noqa: F401,F403  the fifteen public functions
from .functional import __all__ as _functional_names
from .cpu.workspace import release as release_workspace, set_workspace_limit, workspace_limit
from .spec import ConvSpec
from .tuning import tune
from .version import __version__
from .compile_cache import load_without_refresh as _load_without_refresh  # noqa: E402

_load_without_refresh()   # the kernels above are all defined now

__all__ = ["reference", "devices", "algorithms", "ConvSpec", "tune", "set_workspace_limit", "workspace_limit",
           "release_workspace", "CompilingNotice",
           *_functional_names]
