"""How the CPU kernels share their work among threads, and BLAS held to one thread meanwhile.

One idiom for every parallel kernel:

- a call runs on :func:`thread_count` threads, Numba's current setting
  (``numba.set_num_threads``; numbaconv.torch lowers it per call to PyTorch's
  count);
- each parallel stage is a serial body ``@njit(cache=True) def body(thread,
  threads, ...)`` that does *logical* thread ``thread``'s consecutive share
  (:func:`share`) of the stage's items, and :func:`on_threads` runs it for
  ``thread`` in ``range(threads)`` (int64 both) in one ``prange`` region;
- a thread's scratch is row ``thread`` of a buffer borrowed with
  ``workspace.per_thread(name, threads, size, dtype)``, sized by the same
  count (:func:`scratch` shapes a row);
- where threads reduce into one result, each sums into a partial of its own
  and :func:`add_partials` (or, inside a kernel's own share,
  :func:`add_in_thread_order`) adds the partials in thread order.

Why bodies and one launcher rather than a ``prange`` loop in each kernel:
Numba compiles a ``prange`` loop's body into a gufunc, wraps it twice and
links all three into the kernel, and LLVM optimises and emits the body's
machine code again in each library that links it: four to five times in
all, half or more of a parallel kernel's compile time. :func:`on_threads`
compiles the body once, as an ordinary function, and the launcher
(:func:`_launch`, a ``prange`` over a call through the body's machine-code
address) is a few lines compiled once for all bodies: the arguments go packed
into bytes (:func:`_pack`, compiled per argument types: packing them in Python
costs 6-13 microseconds more a call, a tenth to a quarter of a small layer's
time), and a small serial function compiled per argument types
(:func:`_unpack_call`) unpacks them and calls the body. Arrays reach the
body as Numba's gufuncs pass them, without their reference count, so the
views a body takes cost no atomic count updates shared between the threads;
the launcher holds the references until every thread is done. A body
returns nothing; an exception it raises on any thread reaches the caller
(the failing shares are run again through the body's dispatcher, which
raises it as Numba does).

The share, the scratch row and the partial of an iteration are fixed by its
index, whichever worker runs it, so the same operands and thread count give
the same bits on every call (numbaconv.algorithm, rule 4) under any threading
layer. ``numba.get_thread_id()`` would tie them to the worker instead (the TBB
layer hands iterations to whichever worker is free); it is below
``numba.get_num_threads()`` inside a parallel region, but rows sized by
``NUMBA_NUM_THREADS`` would hold scratch for threads a lowered count never
starts. ``supports`` bounds scratch with :func:`most_threads`, so its answer
holds for every count a call can run on.

The GEMM-based algorithms call BLAS from inside these regions
(``blas.gemm``), so BLAS must not start threads of its own:
:func:`single_threaded_blas` holds it to one while a call runs. ``prange``
rather than a Python thread pool: Numba's OpenMP workers, which PyTorch's
operations share in a process that loads both, spin for milliseconds after
each parallel region, and a second pool's threads would take turns with them
on the cores; waking a sleeping pool worker also costs a tenth of a
millisecond, a ``prange`` region microseconds. ``python
bench/train_step.py`` times the kernels right after PyTorch's operations
(docs/decisions.md, T1).
"""
import ctypes
import threading

import numba
import numpy as np
from numba import njit, prange, types
from numba._dispatcher import compute_fingerprint
from numba.core import cgutils
from numba.extending import intrinsic
from threadpoolctl import ThreadpoolController

# Elements of a sum of per-thread partials from which the threads add them (add_partials): below it
# NumPy's passes in the caller's thread are faster (docs/decisions.md, T6).
THREADED_PARTIALS_MIN = 1 << 21


def thread_count() -> int:
    """Threads a call shares its work among: Numba's current setting (``numba.set_num_threads``)."""
    return numba.get_num_threads()


def most_threads() -> int:
    """The most threads a call can run on, ``NUMBA_NUM_THREADS`` (``numba.set_num_threads`` only
    lowers the count): what ``supports`` counts scratch with."""
    return numba.config.NUMBA_NUM_THREADS


def on_threads(body, threads, *args):
    """``body(thread, threads, *args)`` for every ``thread`` in ``range(threads)``, in parallel:
    ``body`` an ``@njit(cache=True)`` function of one logical thread's share that returns
    nothing; ``args`` arrays, scalars and tuples of them. The body is compiled (or loaded from
    the cache) for the arguments' types on first use."""
    body_address, call_address, size = _addresses(body, args)
    packed = np.empty(size, np.uint8)
    _pack(args, packed)
    if _launch(call_address, body_address, np.int64(threads), packed):
        _raise_failure(body, threads, args)


def _raise_failure(body, threads, args):
    """Raise what a body raised on one of the threads: run the threads' shares again one by one
    through the body's dispatcher, which raises the exception as Numba does (a share that raised
    once raises again: the bodies are deterministic)."""
    for thread in range(threads):
        body(np.int64(thread), np.int64(threads), *args)
    raise RuntimeError(f"numbaconv: {body.__name__} failed on one of {threads} threads")


# (body, the arguments' Numba fingerprints) -> (the body's machine-code address, that of
# _unpack_call for the arguments' tuple, the tuple's size in bytes)
_BODY_ADDRESSES = {}


def _addresses(body, args):
    """``(body address, call address, size)``: the machine code of ``body`` compiled for ``(int64,
    int64, *args)``, that of :func:`_unpack_call` for a pointer to the tuple of ``args``, and
    the bytes that tuple takes."""
    try:
        key = (body, *map(compute_fingerprint, args))
    except (TypeError, ValueError):   # an argument without a fingerprint: its full Numba type
        key = (body, *map(numba.typeof, args))
    found = _BODY_ADDRESSES.get(key)
    if found is None:
        target, tuple_type = numba.core.registry.cpu_target.target_context, numba.typeof(args)
        found = _BODY_ADDRESSES[key] = (
            _machine_code(body, types.none(types.int64, types.int64, *tuple_type.types)),
            _machine_code(_unpack_call, types.boolean(types.int64, types.int64, types.int64,
                                                      types.CPointer(tuple_type))),
            target.get_abi_sizeof(target.data_model_manager[tuple_type].get_data_type()))
    return found


def _machine_code(function, signature):
    """The address of ``function`` (a dispatcher) compiled, or loaded from the cache, for ``signature``."""
    result = function.get_compile_result(signature)
    return result.library.get_pointer_to_function(result.fndesc.llvm_func_name)


@intrinsic
def _store(typingctx, args, packed):
    """``args`` (a tuple) stored at the start of the bytes of ``packed`` (a uint8 array at least as
    large as the tuple)."""
    def codegen(context, builder, signature, values):
        model = context.data_model_manager[args]
        data = context.make_array(packed)(context, builder, values[1]).data
        builder.store(model.as_data(builder, values[0]), builder.bitcast(data, model.get_data_type().as_pointer()))
        return context.get_dummy_value()
    return types.none(args, packed), codegen


@njit(cache=True)
def _pack(args, packed):
    """Copy the tuple ``args`` into the bytes of ``packed``, for :func:`_unpack_call` on the threads."""
    _store(args, packed)


@njit(cache=True)
def _unpack_call(address, thread, threads, args_pointer):
    """``body(thread, threads, *args)`` for the body at ``address`` and the tuple at ``args_pointer``;
    whether the body raised. Compiled per argument types, serial: the one piece of a launch that
    depends on them (:func:`_launch` is compiled once)."""
    return _call_body(address, thread, threads, args_pointer)


@intrinsic
def _call_body(typingctx, address, thread, threads, args_pointer):
    """``body(thread, threads, *args)`` for the body at machine-code ``address`` and the tuple
    at ``args_pointer``, its arrays (those at the top level of ``args``) passed without their
    reference count (their owner is the caller, for the whole call); whether the body raised.
    (An exception raised on a worker thread would be set in that thread's Python state, where
    no caller sees it.)"""
    arg_types = (thread, threads, *args_pointer.dtype.types)

    def codegen(context, builder, signature, values):
        address_value, thread_value, threads_value, pointer = values
        packed = context.data_model_manager[args_pointer.dtype].from_data(builder, builder.load(pointer))
        arguments = [thread_value, threads_value]
        for position, arg_type in enumerate(arg_types[2:]):
            value = builder.extract_value(packed, position)
            if isinstance(arg_type, types.Array):
                array = context.make_array(arg_type)(context, builder, value)
                array.meminfo = cgutils.get_null_value(array.meminfo.type)
                array.parent = cgutils.get_null_value(array.parent.type)
                value = array._getvalue()
            arguments.append(value)
        function_type = context.call_conv.get_function_type(types.none, arg_types)
        function = builder.inttoptr(address_value, function_type.as_pointer())
        status, _ = context.call_conv.call_function(builder, function, types.none, arg_types, arguments)
        return status.is_error
    return types.boolean(address, thread, threads, args_pointer), codegen


@intrinsic
def _call_unpacker(typingctx, call, address, thread, threads, packed):
    """``_unpack_call(address, thread, threads, pointer to packed's bytes)`` through its machine
    code at ``call``; whether it or the body raised."""
    arg_types = (types.int64, types.int64, types.int64, types.voidptr)

    def codegen(context, builder, signature, values):
        function_type = context.call_conv.get_function_type(types.boolean, arg_types)
        function = builder.inttoptr(values[0], function_type.as_pointer())
        data = context.make_array(packed)(context, builder, values[4]).data
        pointer = builder.bitcast(data, context.get_value_type(types.voidptr))
        status, raised = context.call_conv.call_function(builder, function, types.boolean, arg_types,
                                                         [values[1], values[2], values[3], pointer])
        return builder.or_(status.is_error, raised)
    return types.boolean(call, address, thread, threads, packed), codegen


@njit(parallel=True, cache=True)
def _launch(call, address, threads, packed):
    """:func:`on_threads` for the body at machine-code ``address``, its arguments packed in
    ``packed`` and unpacked by the code at ``call`` (:func:`_unpack_call`); how many threads'
    bodies raised. One compiled launcher serves every body and argument types."""
    failures = 0
    for index in prange(threads):
        failures += np.int64(_call_unpacker(call, address, np.int64(index), threads, packed))
    return failures


@njit(inline="always", cache=True)
def share(count, thread, threads):
    """``[first, stop)`` of ``thread``'s near-equal, consecutive share of ``count`` items."""
    return count * thread // threads, count * (thread + 1) // threads


@njit(inline="always", cache=True)
def block_of(number, block, count):
    """(first item, items) of block ``number`` of ``count`` items in blocks of ``block``."""
    first = number * block
    return first, min(block, count - first)


@njit(inline="always", cache=True)
def scratch(rows, thread, shape):
    """``thread``'s row of per-thread scratch ``rows``, its first elements shaped ``shape``."""
    size = 1
    for extent in shape:
        size *= extent
    return rows[thread, :size].reshape(shape)


@njit(inline="always", cache=True)
def add_in_thread_order(partials, out, first, stop):
    """Elements ``[first, stop)`` (row-major) of ``out = partials[0] + partials[1] + ...``, for
    ``partials`` (threads, rows, columns or more: the rest is left out) and ``out`` (rows,
    columns), views of any strides: each
    element summed in thread order in the partials' dtype, then stored in ``out``'s, so the
    result has the same bits on every call. ``out`` may be ``partials[0]``. FLOPs: ``threads -
    1`` per element; memory: the partials read once, ``out`` written once."""
    threads, columns = partials.shape[0], out.shape[1]
    element = first
    while element < stop:
        row, column = element // columns, element % columns
        end = min(columns, column + stop - element)
        for j in range(column, end):
            total = partials[0, row, j]
            for partial in range(1, threads):
                total += partials[partial, row, j]
            out[row, j] = total
        element += end - column


def add_partials(partials, out):
    """:func:`add_in_thread_order` of all of ``out``, the threads taking consecutive shares of its
    elements; below ``THREADED_PARTIALS_MIN`` elements by NumPy in the caller's thread, the same
    additions in the same order (a small problem's first call then compiles no kernel for it)."""
    if out.size < THREADED_PARTIALS_MIN:
        total = partials[0, :, :out.shape[1]].copy()
        for partial in partials[1:]:
            total += partial[:, :out.shape[1]]
        out[...] = total
        return
    on_threads(_add_partials_share, partials.shape[0], partials, out)


@njit(cache=True)
def _add_partials_share(thread, threads, partials, out):
    first, stop = share(out.size, thread, threads)
    add_in_thread_order(partials, out, first, stop)


class _SingleThreadedBlas:
    """Holds BLAS to one thread while any call runs, restoring it when the last one ends.

    The thread counts are process-wide; two overlapping calls from the
    caller's own threads must not restore each other's settings. The BLAS
    libraries are found once (threadpoolctl scans the loaded libraries in
    0.3 ms); each call then reads their counts and sets only those above one
    (a few microseconds, where threadpoolctl's ``limit`` and restore took 18).
    """

    def __init__(self):
        self._lock = threading.Lock()
        self._active = 0
        self._libraries = None
        self._restore = ()

    def __enter__(self):
        with self._lock:
            if self._active == 0:
                if self._libraries is None:
                    self._libraries = [library for library in ThreadpoolController().lib_controllers
                                       if library.user_api == "blas"]
                self._restore = [(library, count) for library in self._libraries
                                 if (count := library.get_num_threads()) != 1]
                for library, _ in self._restore:
                    library.set_num_threads(1)
            self._active += 1
        return self

    def __exit__(self, *exception):
        with self._lock:
            self._active -= 1
            if self._active == 0:
                for library, count in self._restore:
                    library.set_num_threads(count)
                    if library.get_num_threads() != count:
                        _raise_from_this_thread(library, count)
                self._restore = ()


def _raise_from_this_thread(library, count):
    """Set ``library``'s thread count to ``count`` where ``set_num_threads`` did not.

    OpenBLAS 0.3.31 (pthreads) ignores a raise from a thread other than the
    one that lowered the count, which the last of several overlapping calls
    usually is; its ``openblas_set_num_threads_local`` raises it from any
    thread (for every thread, in that build)."""
    try:
        set_local = ctypes.CDLL(library.filepath).openblas_set_num_threads_local
    except (OSError, AttributeError):
        return
    set_local.argtypes, set_local.restype = [ctypes.c_int], ctypes.c_int
    set_local(count)


_single_threaded_blas = _SingleThreadedBlas()


def single_threaded_blas():
    """Context manager: BLAS held to one thread inside (the parallel stages call it from their bodies)."""
    return _single_threaded_blas
