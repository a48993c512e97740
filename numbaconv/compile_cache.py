"""Where Numba keeps the compiled kernels, and a fallback where it cannot write.

The kernels are compiled with ``cache=True``, so a process loads them from
Numba's cache instead of compiling again. Numba writes that cache next to
the source (``numbaconv/**/__pycache__``) or, where that folder is not
writable, in the user's cache folder (``~/.cache/numba``); with neither
writable (a service account, a read-only container) it refuses to define a
cached function at all, and importing numbaconv would fail. So before any
kernel is defined, :func:`ensure_writable` asks Numba whether it can cache
a function of this package; if not (and ``$NUMBA_CACHE_DIR`` is not set),
it points Numba at a folder in the temporary directory and warns once.
"""
import os
import tempfile
import warnings

import numba
from numba.core import config


def _probe():
    return 0


def _numba_can_cache() -> bool:
    """Whether Numba finds a writable cache folder for a function defined in this package."""
    try:
        numba.njit(cache=True)(_probe)
    except RuntimeError:
        return False
    return True


def ensure_writable() -> None:
    """Point Numba's cache at ``<tmp>/numbaconv-numba-cache-<uid>`` when it has nowhere to write."""
    if config.CACHE_DIR or _numba_can_cache():
        return
    folder = os.path.join(tempfile.gettempdir(), f"numbaconv-numba-cache-{os.getuid()}")
    try:
        os.makedirs(folder, mode=0o700, exist_ok=True)
    except OSError as error:
        raise RuntimeError(
            f"numbaconv: Numba cannot write its cache of compiled kernels next to numbaconv, in the "
            f"user's cache folder or in {folder} ({error}); set NUMBA_CACHE_DIR to a writable folder"
        ) from None
    config.CACHE_DIR = folder
    warnings.warn(
        f"numbaconv: Numba cannot write its cache next to numbaconv or in the user's cache folder; "
        f"compiled kernels are cached in {folder} instead. Set NUMBA_CACHE_DIR to choose the folder.",
        RuntimeWarning, stacklevel=3)

