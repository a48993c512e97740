"""``algo="tune"``: time the algorithms once per problem, remember the fastest.

A plan is the winner for one (device, pass, dtype, Numba thread count,
3-d ConvSpec); the passes are ``"forward"``, ``"input"`` and ``"weight"``,
tuned separately because their winners differ (winograd wins the forward
pass of 256 channels at 14x14 but loses its weight gradient, for one). The first call with a new plan runs every algorithm
whose ``supports(spec)`` accepts the problem on the call's own operands,
writing only into the result the call allocated: one warm-up call each
(compilation, first touch of scratch buffers), then ``REPEATS`` rounds in
which they take turns, each keeping its best time (numbaconv.timing). Later
calls find the plan in a dict.

Plans also go to a JSON file, so a new process skips the timing. Its folder
is ``$NUMBACONV_CACHE_DIR``, else ``$XDG_CACHE_HOME/numbaconv``, else
``~/.cache/numbaconv``; its name carries a digest of :func:`identity`
(numbaconv, Numba and NumPy versions, CPU model, core count and Numba's
thread count), and the file repeats that identity, checked on reading, so
plans made under another version or on another machine are never used.
Writes go to a temporary file moved into place with ``os.replace`` (a
reader never sees half a file) and merge what other processes wrote in the
meantime. A corrupt or unreadable file, or a folder that cannot be written,
gives one warning and tuning carries on in memory.

``tune(problems)`` tunes a list of problems ahead of time (on random data)
and returns the winners.

This module sits between numbaconv.functional (which runs the winners) and
numbaconv.dispatch (the registry it times); it imports no module above it
(``tune`` runs the kernels itself, as the engine would).
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
import tempfile
import warnings

import numba
import numpy as np

from . import dispatch, timing
from .algorithm import read_only
from .devices import cpu_model, empty, resolve_device, to_gpu
from .passes import PASSES
from .spec import ConvSpec
from .version import __version__

REPEATS = 3
FORMAT = 1                  # of the plan file; bump when its layout changes
CONV_OPTIONS = ("stride", "padding", "dilation", "groups")
STATS = {"timed": 0, "loaded": 0}   # problems timed, plan files looked for: what the tests observe


def identity() -> dict:
    """What a plan depends on beyond the problem: versions and the CPU."""
    return {"format": FORMAT, "numbaconv": __version__, "numba": numba.__version__,
            "numpy": np.__version__, "cpu": cpu_model(), "cpu_count": os.cpu_count(),
            "numba_threads": numba.config.NUMBA_NUM_THREADS}


def cache_dir() -> str:
    """The plan folder: $NUMBACONV_CACHE_DIR, else the user's cache folder + /numbaconv."""
    folder = os.environ.get("NUMBACONV_CACHE_DIR")
    if folder:
        return folder
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "numbaconv")


def _well_formed(plan) -> bool:
    """A plan as :func:`winner` writes it: ``{"algo": name, "ms": {name: milliseconds}}``."""
    return (isinstance(plan, dict) and isinstance(plan.get("algo"), str) and isinstance(plan.get("ms"), dict)
            and all(isinstance(name, str) and isinstance(ms, (int, float)) for name, ms in plan["ms"].items()))


class PlanCache:
    """The plans of one folder: a dict in memory, backed by one JSON file."""

    def __init__(self, folder: str):
        self.identity = identity()
        digest = hashlib.sha256(json.dumps(self.identity, sort_keys=True).encode()).hexdigest()[:16]
        self.path = os.path.join(folder, f"plans-{digest}.json")
        self.plans = {}
        self._loaded = False
        self._writable = True

    def get(self, key: str):
        if not self._loaded:
            self._loaded = True
            self.plans = {**self._read(warn=True), **self.plans}
            STATS["loaded"] += 1
        return self.plans.get(key)

    def put(self, key: str, plan: dict) -> None:
        self.plans[key] = plan
        if self._writable:
            self._write()

    def _read(self, warn: bool) -> dict:
        """The plans in the file; {} when it is missing, made by another version, or unreadable
        (with a warning when ``warn``)."""
        try:
            with open(self.path, encoding="utf-8") as file:
                content = json.load(file)
            if not isinstance(content, dict):
                raise ValueError("not a JSON object")
            if content.get("identity") != self.identity:
                return {}
            plans = content["plans"]
            if not isinstance(plans, dict) or not all(map(_well_formed, plans.values())):
                raise ValueError("malformed plans")
        except (FileNotFoundError, NotADirectoryError):   # nothing written yet (or no folder can be)
            return {}
        except (OSError, ValueError, KeyError) as error:
            if warn:
                warnings.warn(f"numbaconv: ignoring the tuning plan file {self.path} ({error}); "
                              f"it will be rewritten", RuntimeWarning, stacklevel=2)
            return {}
        return plans

    def _write(self) -> None:
        folder = os.path.dirname(self.path)
        try:
            os.makedirs(folder, exist_ok=True)
            plans = {**self._read(warn=False), **self.plans}   # keep what other processes added
            handle, temporary = tempfile.mkstemp(prefix=".plans-", suffix=".tmp", dir=folder)
            try:
                with os.fdopen(handle, "w", encoding="utf-8") as file:
                    json.dump({"identity": self.identity, "plans": plans}, file, indent=1, sort_keys=True)
                os.replace(temporary, self.path)
            except BaseException:
                os.unlink(temporary)
                raise
        except OSError as error:
            self._writable = False
            warnings.warn(f"numbaconv: cannot write the tuning plan file {self.path} ({error}); "
                          f"plans are kept in memory for this process only", RuntimeWarning, stacklevel=2)


_caches = {}


def plan_cache() -> PlanCache:
    """The plans of the current plan folder (read from disk on first use)."""
    folder = cache_dir()
    cache = _caches.get(folder)
    if cache is None:
        cache = _caches[folder] = PlanCache(folder)
    return cache


def forget() -> None:
    """Drop the plans held in memory (the files stay): the next lookup reads the disk as a new process would."""
    _caches.clear()


@functools.lru_cache(maxsize=4096)
def _device_label(device: str) -> str:
    if device == "cuda":
        from numba import cuda
        name = getattr(cuda.get_current_device(), "name", "simulator")   # Numba's simulator has no name
        return f"cuda:{name.decode() if isinstance(name, bytes) else name}"
    return device


@functools.lru_cache(maxsize=4096)
def plan_key(device: str, pass_name: str, dtype: str, threads: int, spec3d: ConvSpec) -> str:
    """The plan's name in memory and on disk."""
    s = spec3d
    shape = "x".join(map(str, (s.batch, s.in_channels, s.out_channels, s.groups)))
    fields = [_device_label(device), pass_name, dtype, f"threads{threads}", f"NCKg{shape}"]
    fields += [f"{name}{'x'.join(map(str, getattr(s, name)))}"
               for name in ("in_size", "kernel_size", "stride", "dilation", "pad_lo", "pad_hi")]
    return "|".join(fields)


def _clock(device: str) -> timing.Clock:
    """The host clock, waiting for the GPU's queued work where the algorithms run on it."""
    if device == "cuda":
        from numba import cuda
        return timing.host_clock(cuda.synchronize)
    return timing.host_clock()


def _time_algorithms(device: str, spec3d: ConvSpec, run) -> dict:
    """A plan: the fastest of the algorithms that support ``spec3d``, each timed by ``run(module)``."""
    modules = dispatch.registry(device)
    names = dispatch.runnable(device, spec3d)
    seconds = timing.best_times([lambda name=name: run(modules[name]) for name in names], _clock(device),
                                warmup=1, rounds=REPEATS)
    STATS["timed"] += 1
    return {"algo": names[seconds.index(min(seconds))],
            "ms": {name: t * 1e3 for name, t in zip(names, seconds)}}


def _threads(device: str) -> int:
    return numba.get_num_threads() if device == "cpu" else 0


def lookup(device: str, pass_name: str, spec3d: ConvSpec, dtype) -> dict | None:
    """The remembered plan of a problem (``{"algo": name, "ms": {name: best ms}}``), or None."""
    return plan_cache().get(plan_key(device, pass_name, np.dtype(dtype).name, _threads(device), spec3d))


def winner(device: str, pass_name: str, spec3d: ConvSpec, dtype, run):
    """The algorithm module of the remembered plan, timing the candidates through
    ``run(module)`` first when there is no usable plan."""
    key = plan_key(device, pass_name, np.dtype(dtype).name, _threads(device), spec3d)
    cache = plan_cache()
    modules = dispatch.registry(device)
    plan = cache.get(key)
    # a plan naming an algorithm that no longer exists or runs the problem is timed again
    if plan is None or plan["algo"] not in dispatch.runnable(device, spec3d):
        plan = _time_algorithms(device, spec3d, run)
        cache.put(key, plan)
    return modules[plan["algo"]]


def runner(device: str, algo: str, spec3d: ConvSpec, dtype):
    """``run(pass_name, call)``: ``call(module)`` on the algorithm ``algo`` means for that pass;
    ``"tune"`` looks the pass's plan up (making it first if needed), other names go to
    ``dispatch.choose`` (per pass: "auto" may pick a different algorithm for each), which checks
    them at once, before anything runs."""
    if algo == "tune":
        return lambda pass_name, call: call(winner(device, pass_name, spec3d, dtype, call))
    dispatch.choose(device, algo, spec3d, "forward")
    return lambda pass_name, call: call(dispatch.choose(device, algo, spec3d, pass_name))


def _parse_problem(problem):
    """(spec, dtype, options) of a problem: a dict with ``x_shape``, ``w_shape`` and optional
    ``dtype``, ``stride``, ``padding``, ``dilation``, ``groups``; or a tuple
    ``(x_shape, w_shape)`` / ``(x_shape, w_shape, {options, dtype})``."""
    if isinstance(problem, dict):
        options = dict(problem)
        try:
            x_shape, w_shape = options.pop("x_shape"), options.pop("w_shape")
        except KeyError:
            raise ValueError(f"a tuning problem needs x_shape and w_shape, got {problem!r}") from None
    elif isinstance(problem, (tuple, list)) and len(problem) in (2, 3):
        x_shape, w_shape = problem[:2]
        options = dict(problem[2]) if len(problem) == 3 else {}
    else:
        raise ValueError(f"a tuning problem is a dict or an (x_shape, w_shape[, options]) tuple, got {problem!r}")
    dtype = np.dtype(options.pop("dtype", "float32"))
    unknown = set(options) - set(CONV_OPTIONS)
    if unknown:
        raise ValueError(f"unknown tuning problem keys {sorted(unknown)}; "
                         f"allowed: x_shape, w_shape, dtype, {', '.join(CONV_OPTIONS)}")
    spec = ConvSpec.create(tuple(x_shape), tuple(w_shape), **options)
    return spec, dtype, options


def _kernel_runs(device: str, spec, x, w, grad_y) -> dict:
    """``{pass name: run(module)}`` for the operands of ``spec``, as the engine (numbaconv.functional)
    hands them to the algorithms: contiguous (read-only on the CPU), in the 3-d problem's 5-d layout, on ``device``, each
    pass writing into a result allocated once here."""
    spec3d = spec.as_3d()
    place, allocate = (to_gpu, empty) if device == "cuda" else (lambda a, shape: read_only(a.reshape(shape)), np.empty)
    x, w, grad_y = (place(a, shape) for a, shape in
                    zip((x, w, grad_y), (spec3d.x_shape, spec3d.w_shape, spec3d.y_shape)))
    y, grad_x, grad_w = (allocate(shape, x.dtype) for shape in (spec3d.y_shape, spec3d.x_shape, spec3d.w_shape))
    return {"forward": lambda module: module.forward(spec3d, x, w, y),
            "input": lambda module: module.backward_input(spec3d, grad_y, w, grad_x),
            "weight": lambda module: module.backward_weight(spec3d, x, grad_y, grad_w)}


def tune(problems, *, device="cpu", passes=PASSES, seed=0) -> list[dict]:
    """Tune every problem ahead of time, on random data, and return the winners.

    ``problems``: a list of dicts ``{"x_shape": (N, C, *spatial), "w_shape": (K, C // groups,
    *kernel), "dtype": "float32", "stride": 1, "padding": 0, "dilation": 1, "groups": 1}``
    (all but the shapes optional), or tuples ``(x_shape, w_shape)`` or ``(x_shape, w_shape,
    {options})``. ``passes``: any of "forward", "input", "weight". Problems already tuned
    (in memory or in the plan file) are not timed again; an empty batch, for which the engine
    runs no kernel, makes no plan (``algo`` None).

    Returns one dict per problem and pass: ``x_shape``, ``w_shape``, ``dtype``, the options,
    ``pass``, ``algo`` (the winner) and ``ms`` (each candidate's best time when it was tuned).
    """
    for pass_name in passes:
        if pass_name not in PASSES:
            raise ValueError(f"unknown pass {pass_name!r}; choose from {PASSES}")
    device = resolve_device(device)
    rng = np.random.default_rng(seed)
    results = []
    for problem in problems:
        spec, dtype, options = _parse_problem(problem)
        x, w, grad_y = (rng.standard_normal(shape).astype(dtype) for shape in (spec.x_shape, spec.w_shape, spec.y_shape))
        runs = _kernel_runs(device, spec, x, w, grad_y)
        for pass_name in passes:
            if spec.batch:
                winner(device, pass_name, spec.as_3d(), dtype, runs[pass_name])
            plan = lookup(device, pass_name, spec.as_3d(), dtype) or {"algo": None, "ms": {}}
            results.append({"x_shape": spec.x_shape, "w_shape": spec.w_shape, "dtype": dtype.name, **options,
                            "pass": pass_name, "algo": plan["algo"], "ms": dict(plan["ms"])})
    return results
