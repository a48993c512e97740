"""The data behind threads.THREADED_PARTIALS_MIN and polyphase.THREADED_COPY_MIN (docs/decisions.md, T6):
the per-thread partials' sum, polyphase's phase planes and its packed weights by NumPy in the caller's thread
against the same by the threads, at growing sizes, float32 data (float64 partials), the calls taking turns in
one process (numbaconv.timing.best_times). Prints microseconds.

    python bench/small_copies.py
"""
import numpy as np

from numbaconv.cpu import polyphase, threads
from numbaconv.spec import ConvSpec
from numbaconv.timing import best_times


def _both(module, name, call):
    """``call`` with ``module.name`` set below and above every size: (NumPy's, the threads') seconds."""
    def run(threshold):
        def timed():
            saved = getattr(module, name)
            setattr(module, name, threshold)
            try:
                call()
            finally:
                setattr(module, name, saved)
        return timed
    return best_times([run(1 << 62), run(0)], budget_s=1.0, max_rounds=400, settle_s=0.01)


def main():
    rng = np.random.default_rng(0)
    count = threads.thread_count()
    for elements in (1 << 10, 1 << 12, 1 << 14, 1 << 16, 1 << 18, 1 << 20, 1 << 22):
        partials, out = rng.standard_normal((count, 1, elements)), np.empty((1, elements), np.float32)
        numpy, threaded = _both(threads, "THREADED_PARTIALS_MIN", lambda: threads.add_partials(partials, out))
        print(f"partials of {elements:7d} elements: NumPy {numpy * 1e6:7.1f} us, threads {threaded * 1e6:7.1f} us")
    for x_shape, w_shape in [((2, 3, 16, 16), (8, 3, 3, 3)), ((1, 3, 32, 32), (16, 3, 3, 3)),
                             ((2, 16, 16, 16), (32, 16, 3, 3)), ((4, 3, 64, 64), (32, 3, 3, 3)),
                             ((4, 32, 56, 56), (512, 32, 3, 3))]:
        spec = ConvSpec.create(x_shape, w_shape, 2, 1, 1, 1).as_3d()
        # the algorithms take 5-d operands (numbaconv.algorithm)
        x = rng.standard_normal(spec.x_shape).astype(np.float32)
        w = rng.standard_normal(spec.w_shape).astype(np.float32)
        planes = _both(polyphase, "THREADED_COPY_MIN", lambda: polyphase._phase_planes(spec, x))
        packed = _both(polyphase, "THREADED_COPY_MIN", lambda: polyphase._packed_weights(spec, w))
        print(f"x {x_shape} ({x.size} elements): phase planes NumPy {planes[0] * 1e6:6.1f} us, threads "
              f"{planes[1] * 1e6:6.1f} us; w {w_shape} ({w.size}): packing NumPy {packed[0] * 1e6:6.1f} us, "
              f"threads {packed[1] * 1e6:6.1f} us")


if __name__ == "__main__":
    main()
