"""Start Numba's worker threads so that they wait passively between kernels.

im2col alternates Numba kernels (unfolding columns) with NumPy's BLAS
(the matrix product), two thread pools on the same cores. Numba's OpenMP
layer (GNU libgomp) lets idle workers spin for a while after each parallel
loop, and on a machine with few cores those spinning workers steal the cores
BLAS needs: on 2 cores the 64ch 56x56 GEMM took 15 ms instead of 9.4 ms.
With ``OMP_WAIT_POLICY=PASSIVE`` idle workers sleep instead.

libgomp reads that variable once, when it is loaded, which Numba does when it
starts its pool. So :func:`start_passive_pool` sets the variable (unless the
user set it), starts Numba's pool, and restores the environment at once: only
the libgomp copy Numba loads now is affected, not one another library loads
later (PyTorch bundles its own). If a pool is already running, or the user
chose ``OMP_WAIT_POLICY`` themselves, nothing changes. Nor does it when
another library already loaded libgomp (PyTorch imported before numbaconv):
the dynamic loader then hands Numba that copy, spinning as it was set up.
``_launch_threads`` is Numba's own (private) pool starter; without it, Numba
starts its pool lazily as usual.
"""
import os

from numba.np.ufunc import parallel


def start_passive_pool() -> None:
    launch = getattr(parallel, "_launch_threads", None)
    if launch is None or "OMP_WAIT_POLICY" in os.environ:
        return
    os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
    try:
        launch()
    finally:
        del os.environ["OMP_WAIT_POLICY"]
