"""Out of core: a 3-d volume several times larger than each worker's memory, filtered through
numbaconv.dask on a local Dask cluster.

1. Writes a synthetic float32 volume (Gaussian noise) to a Zarr store on disk, by default
   4.3 times the memory limit each worker gets.
2. Convolves it with a 3-d filter bank (a 3x3x3 smoothing filter and the 3-d Sobel derivative
   along each axis; padding "same") through ``numbaconv.dask.conv3d`` on a LocalCluster whose
   workers have that memory limit, block by block from the input store into a second Zarr store
   (one channel per filter).
3. Checks sampled blocks of the result against ``numbaconv.conv3d`` on the same region read
   into memory (with the halo the filters reach, zero padding at the volume's faces).
4. Prints the throughput (input voxels per second of step 2, after a warm-up that loads the
   kernels in each worker) and each worker's peak memory (its process's peak resident set).

    python examples/large_volume.py                                   # 512x1024x1024 (2.1 GB), 2 workers of 500 MB
    python examples/large_volume.py --shape 40 48 56 --chunks 16 24 20  # a few seconds
    python examples/large_volume.py --workers 1 --threads 2 --worker-memory 1GB --keep --out /data/run

The stores go to a temporary folder (``--out`` to choose it) and are removed at the end
unless ``--keep``. Needs the dask extra (``pip install -e ".[dask]"``: dask, distributed, zarr).
"""
import argparse
import logging
import math
import os
import resource
import shutil
import tempfile
import time

import dask.array as da
import numpy as np
import zarr
from dask.utils import format_bytes, parse_bytes
from distributed import Client, LocalCluster

import numbaconv as nc
import numbaconv.dask as ncd

DEFAULT_SHAPE = (512, 1024, 1024)
DEFAULT_CHUNKS = (64, 128, 256)
DEFAULT_WORKER_MEMORY = "500MB"
TOLERANCE = 1e-6    # float32, norm-relative
FILTERS = ("smooth", "d/dz", "d/dy", "d/dx")


def filter_bank():
    """(4, 1, 3, 3, 3) float32: the smoothing filter (binomial [1, 2, 1] / 4 along each axis)
    and the Sobel derivative along z, y and x (central difference along it, smoothing across)."""
    smooth, difference = np.array([1, 2, 1]) / 4, np.array([-1, 0, 1]) / 2

    def outer(z, y, x):
        return np.einsum("i,j,k->ijk", z, y, x)

    filters = [outer(smooth, smooth, smooth), outer(difference, smooth, smooth),
               outer(smooth, difference, smooth), outer(smooth, smooth, difference)]
    return np.stack(filters)[:, None].astype(np.float32)


def write_volume(path, shape, chunks, seed=0):
    """A volume of standard normal noise, float32, written to the Zarr store at ``path`` by the
    cluster (no process holds it whole). The stores are uncompressed: noise does not compress,
    and compressing it would cost more than the filtering."""
    volume = da.random.default_rng(seed).standard_normal(shape, chunks=chunks, dtype=np.float32)
    volume.to_zarr(path, overwrite=True, compressors=None)


def filter_volume(in_path, out_path, weights):
    """``numbaconv.dask.conv3d`` of the stored volume with ``weights`` ("same" padding), written
    to the Zarr store at ``out_path`` block by block: (filters, D, H, W)."""
    volume = da.from_zarr(in_path)
    filtered = ncd.conv3d(volume[None, None], weights, padding="same")
    filtered[0].to_zarr(out_path, overwrite=True, compressors=None)


def check_samples(in_path, out_path, weights, chunks, samples, seed=0):
    """The largest norm-relative error of ``samples`` random chunk-sized regions of the result
    against numbaconv.conv3d on the input region and its halo, read into memory (here, by
    this process)."""
    volume, filtered = zarr.open_array(in_path, mode="r"), zarr.open_array(out_path, mode="r")
    halo = [k // 2 for k in weights.shape[2:]]
    rng, worst = np.random.default_rng(seed), 0.0
    for _ in range(samples):
        starts = [int(rng.integers(0, n - c + 1)) for n, c in zip(volume.shape, chunks)]
        region = [slice(a, a + c) for a, c in zip(starts, chunks)]
        low = [max(a - h, 0) for a, h in zip(starts, halo)]
        high = [min(a + c + h, n) for a, c, h, n in zip(starts, chunks, halo, volume.shape)]
        padding = [(h - (a - lo), h - (hi - a - c)) for a, c, h, lo, hi in zip(starts, chunks, halo, low, high)]
        block = volume[tuple(slice(lo, hi) for lo, hi in zip(low, high))]
        expected = nc.conv3d(block[None, None], weights, padding=padding)[0].astype(np.float64)
        actual = filtered[(slice(None), *region)]
        worst = max(worst, float(np.linalg.norm(actual - expected) / np.linalg.norm(expected)))
    return worst


def _peak_resident_bytes():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024    # Linux reports KiB


def main(shape=DEFAULT_SHAPE, chunks=DEFAULT_CHUNKS, workers=2, threads=1,
         worker_memory=DEFAULT_WORKER_MEMORY, out_dir=None, keep=False, samples=4):
    """Runs the four steps and prints them; returns a dict of the numbers."""
    shape, chunks = tuple(shape), tuple(min(c, n) for c, n in zip(chunks, shape))
    limit, weights = parse_bytes(worker_memory), filter_bank()
    temporary = out_dir is None
    out_dir = tempfile.mkdtemp(prefix="numbaconv-large-volume-") if temporary else out_dir
    os.makedirs(out_dir, exist_ok=True)
    in_path, out_path = os.path.join(out_dir, "volume.zarr"), os.path.join(out_dir, "filtered.zarr")
    volume_bytes = math.prod(shape) * 4
    print(f"volume {'x'.join(map(str, shape))} float32 = {format_bytes(volume_bytes)} "
          f"({volume_bytes / limit:.1f}x the {format_bytes(limit)} each of {workers} workers may hold), "
          f"chunks {'x'.join(map(str, chunks))}; result {len(FILTERS)} channels ({', '.join(FILTERS)}) "
          f"= {format_bytes(volume_bytes * len(FILTERS))}; stores in {out_dir}")
    try:
        with LocalCluster(n_workers=workers, threads_per_worker=threads, memory_limit=limit, processes=True,
                          dashboard_address=":0", silence_logs=logging.ERROR) as cluster, Client(cluster) as client:
            started = time.perf_counter()
            write_volume(in_path, shape, chunks)
            print(f"1. wrote the volume in {time.perf_counter() - started:.1f} s")

            warm_up = da.ones((1, 1, *(min(2 * c, n) for c, n in zip(chunks, shape))), dtype=np.float32,
                              chunks=(1, 1, *chunks))
            ncd.conv3d(warm_up, weights, padding="same").sum().compute()   # loads the kernels in each worker
            started = time.perf_counter()
            filter_volume(in_path, out_path, weights)
            seconds = time.perf_counter() - started
            voxels_per_second = math.prod(shape) / seconds
            peaks = client.run(_peak_resident_bytes)
            threads_per_block = client.submit(ncd.task_threads, pure=False).result()
            print(f"2. filtered in {seconds:.1f} s: {voxels_per_second / 1e6:.1f} M voxels/s "
                  f"(workers {workers}, threads per worker {threads}, Numba threads per block {threads_per_block}); "
                  "peak memory of each worker: " + ", ".join(format_bytes(peak) for peak in peaks.values())
                  + f" (limit {format_bytes(limit)})")

            error = check_samples(in_path, out_path, weights, chunks, samples)
            print(f"3. {samples} sampled blocks against numbaconv.conv3d in memory: "
                  f"largest relative error {error:.1e}")
            if not error <= TOLERANCE:
                raise AssertionError(f"the result disagrees with numbaconv.conv3d: relative error {error:.2e}")
    finally:
        if not keep:   # the two stores, and the folder only where this run made it
            for path in (in_path, out_path):
                shutil.rmtree(path, ignore_errors=True)
            if temporary:
                shutil.rmtree(out_dir, ignore_errors=True)
    return {"voxels_per_second": voxels_per_second, "seconds": seconds, "peak_bytes": peaks,
            "memory_limit": limit, "volume_bytes": volume_bytes, "error": error, "out_dir": out_dir}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", nargs=3, type=int, default=DEFAULT_SHAPE, metavar=("D", "H", "W"),
                        help="volume size (default %(default)s)")
    parser.add_argument("--chunks", nargs=3, type=int, default=DEFAULT_CHUNKS, metavar=("D", "H", "W"),
                        help="chunk size on disk and per block (default %(default)s)")
    parser.add_argument("--workers", type=int, default=2, help="worker processes (default 2)")
    parser.add_argument("--threads", type=int, default=1, help="threads per worker (default 1)")
    parser.add_argument("--worker-memory", default=DEFAULT_WORKER_MEMORY,
                        help="memory limit of each worker (default %(default)s)")
    parser.add_argument("--samples", type=int, default=4, help="blocks checked (default 4)")
    parser.add_argument("--out", default=None, help="folder for the Zarr stores (default: a temporary one)")
    parser.add_argument("--keep", action="store_true", help="keep the stores")
    arguments = parser.parse_args()
    main(arguments.shape, arguments.chunks, arguments.workers, arguments.threads, arguments.worker_memory,
         arguments.out, arguments.keep, arguments.samples)
