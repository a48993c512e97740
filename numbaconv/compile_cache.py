"""Where Numba keeps the compiled kernels, a fallback where it cannot write, and a
word to the user while it compiles them.

The kernels are compiled with ``cache=True``, so a process loads them from
Numba's cache instead of compiling again. Numba writes that cache next to
the source (``numbaconv/**/__pycache__``) or, where that folder is not
writable, in the user's cache folder (``~/.cache/numba``); with neither
writable (a service account, a read-only container) it refuses to define a
cached function at all, and importing numbaconv would fail. So before any
kernel is defined, :func:`ensure_writable` asks Numba whether it can cache
a function of this package; if not (and ``$NUMBA_CACHE_DIR`` is not set),
it points Numba at a folder in the temporary directory and warns once.

Compiling a kernel takes seconds (the largest, Winograd's tile blocks with their helpers, about 9 s
on two cores); a process pays it once per kernel and dtype when the cache is cold, then
loads the machine code in milliseconds. :func:`watch_compilation` listens
to Numba's compile events (cache misses only: a load from the cache fires
none): when numbaconv's compilation has gone on for ``NOTICE_AFTER_S``, it
warns once per process (:class:`CompilingNotice`, one line: what is being
compiled, where it is cached, and that ``numbaconv compile`` pays it ahead
of time), and it tells the functions in ``COMPILE_LISTENERS`` (the
command's progress bar) the name of each kernel it starts compiling.
"""
from __future__ import annotations

import os
import tempfile
import threading
import warnings

import sys

import numba
from numba.core import config, event
from numba.core.caching import FunctionCache
from numba.core.runtime.nrt import rtsys

NOTICE_AFTER_S = 1.0
COMPILE_LISTENERS = []   # functions called with a kernel's name as numbaconv starts compiling it


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



def cache_folder(function) -> str:
    """The folder Numba's cache locator picks for the machine code of Python ``function``'s module:
    under $NUMBA_CACHE_DIR when set, else __pycache__ beside its source, else the user's cache
    folder."""
    return FunctionCache(function).cache_path


class CompilingNotice(UserWarning):
    """numbaconv is compiling kernels for this machine (once; they are cached afterwards)."""


def _kernel(compile_event):
    """The numbaconv function a Numba compile event is about, or None for anyone else's."""
    function = getattr(compile_event.data.get("dispatcher"), "py_func", None)
    if function is None or not function.__module__.startswith("numbaconv."):
        return None
    return function


def _name(function) -> str:
    """``"cpu.planar._correlate_kernel"`` for that numbaconv function."""
    return f"{function.__module__.removeprefix('numbaconv.')}.{function.__name__}"


def kernel_name(compile_event) -> str | None:
    """The name (:func:`_name`) of the numbaconv function a compile event is about, or None."""
    function = _kernel(compile_event)
    return None if function is None else _name(function)


class _CompileWatch(event.Listener):
    """Counts nested numbaconv compilations; the outermost one starts the notice's timer."""

    def __init__(self):
        self.depth = 0
        self.timer = None
        self.noticed = False

    def on_start(self, compile_event):
        function = _kernel(compile_event)
        if function is None:
            return
        self.depth += 1
        if self.depth > 1:
            return
        name = _name(function)
        for listener in COMPILE_LISTENERS:
            listener(name)
        if not self.noticed:
            self.timer = threading.Timer(NOTICE_AFTER_S, self._notice,
                                         (name, cache_folder(function)))
            self.timer.daemon = True
            self.timer.start()

    def on_end(self, compile_event):
        if _kernel(compile_event) is None:
            return
        self.depth -= 1
        if self.depth == 0 and self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def _notice(self, name, folder):
        self.noticed = True
        warnings.warn_explicit(f"compiling kernels for this machine (now {name}); this happens once, they are "
                               f"cached in {folder}. `numbaconv compile` compiles them all ahead of time.",
                               CompilingNotice, "numbaconv", 0)


def watch_compilation() -> None:
    """Listen to Numba's compile events for the notice and ``COMPILE_LISTENERS`` (once per process)."""
    global _WATCH
    if _WATCH is None:
        _WATCH = _CompileWatch()
        event.register("numba:compile", _WATCH)


_WATCH = None


class _LoadWithoutRefresh(FunctionCache):
    """Numba's cache of one numbaconv kernel, loading machine code without first refreshing the
    target context: Numba refreshes it before every load from the cache, and the first refresh
    of a process imports and installs every typing and lowering registry (0.1-0.2 s, most of a
    warm first call), which only compiling needs (Numba's compiler refreshes for itself). Loading
    needs Numba's runtime, which the machine code links against."""

    def load_overload(self, sig, target_context):
        rtsys.initialize(target_context)
        with self._guard_against_spurious_io_errors():
            return self._load_overload(sig, target_context)


def load_without_refresh() -> None:
    """Give every numbaconv dispatcher imported so far a :class:`_LoadWithoutRefresh` cache. Where
    this Numba's cache lacks the methods it uses, the dispatchers keep Numba's own."""
    if not all(hasattr(FunctionCache, name) for name in ("_guard_against_spurious_io_errors", "_load_overload")):
        return
    for name, module in list(sys.modules.items()):
        if not name.startswith("numbaconv."):
            continue
        for value in vars(module).values():
            if type(getattr(value, "_cache", None)) is FunctionCache:
                value._cache.__class__ = _LoadWithoutRefresh
