"""numbaconv.dask's throughput on 1 and 2 local workers against the in-memory call, and what one
block costs, to choose chunk sizes by.

1. Throughput: two problems, float32, ``algo="auto"``:
   - a 3-d volume in spatial chunks (the halo between blocks): x (1, 8, 128, 256, 256), 3x3x3
     filters 8 -> 8, padding "same", chunks 64x128x128 (8 blocks of 32 MiB);
   - a 2-d batch in batch chunks (no halo): x (256, 32, 64, 64), 3x3 filters 32 -> 32,
     padding 1, 64 samples a block (4 blocks of 32 MiB).
   The data is made by Dask's random generator from one seed, so each cluster makes the same
   values in its workers' memory and this process the same for the in-memory call.
   Each is timed as the in-memory ``numbaconv.conv{n}d`` (all of Numba's threads), and as
   ``numbaconv.dask.conv{n}d`` on a LocalCluster of 1 worker x 1 thread (a block gets every
   core) and of 2 workers x 1 thread (a block gets cores / 2), the input already held by the
   workers (``persist``), the call building the graph, computing every block and summing it
   (only the sum comes back). The three take turns, best of ``--repeats`` (numbaconv.timing).
2. Per block: a 512x512 image, one 3x3 filter, padding "same", in chunks of 32 to 512 pixels on
   the 2-worker cluster: the time per block, against the in-memory call on the whole image. At
   32x32 a block's convolution takes microseconds, so its time per block is the overhead of one
   block (its tasks: the halo's pieces, the convolution, the sum).

    python bench/dask_throughput.py [--repeats 5] [--json FILE]

Needs the dask extra (``pip install -e ".[dask]"``). Timings wander on a busy machine: take
numbers of record on a quiet one.
"""
import argparse
import json
import logging
import math
import platform

import dask.array as da
import numba
import numpy as np
from dask.system import CPU_COUNT
from distributed import Client, LocalCluster

import numbaconv as nc
import numbaconv.dask as ncd
from numbaconv import timing

# (name, x shape, weight shape, padding, chunks)
THROUGHPUT_PROBLEMS = [
    ("3-d volume, spatial chunks", (1, 8, 128, 256, 256), (8, 8, 3, 3, 3), "same", (1, 8, 64, 128, 128)),
    ("2-d batch, batch chunks", (256, 32, 64, 64), (32, 32, 3, 3), 1, (64, 32, 64, 64)),
]
BLOCK_IMAGE = (1, 1, 512, 512)
BLOCK_SIZES = (32, 64, 128, 256, 512)
CLUSTERS = {"1 worker x 1 thread": 1, "2 workers x 1 thread": 2}


def _cluster(workers):
    cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                           dashboard_address=":0", silence_logs=logging.ERROR)
    return cluster, Client(cluster, set_as_default=False)


def _functions(rank):
    return getattr(nc, f"conv{rank}d"), getattr(ncd, f"conv{rank}d")


def _random(shape, chunks, seed):
    """float32 standard normal data as a Dask array: the same values wherever it is computed."""
    return da.random.default_rng(seed).standard_normal(shape, chunks=chunks, dtype=np.float32)


def _on_cluster(client, conv, x, w, padding):
    """A call running ``conv`` over ``x`` (a Dask array the workers hold) on ``client``'s cluster,
    the result summed there."""
    return lambda: client.compute(conv(x, w, padding=padding).sum()).result()


def throughput(clients, repeats):
    """Rows of input voxels (samples x spatial size) per second: in memory, and on each cluster."""
    rng, rows = np.random.default_rng(0), []
    for name, x_shape, w_shape, padding, chunks in THROUGHPUT_PROBLEMS:
        x = _random(x_shape, chunks, seed=0)
        x_here = x.compute(scheduler="sync")
        w = rng.standard_normal(w_shape).astype(np.float32)
        in_memory, over_dask = _functions(len(x_shape) - 2)
        calls = [lambda: in_memory(x_here, w, padding=padding)]
        for client in clients.values():
            calls.append(_on_cluster(client, over_dask, client.persist(x), w, padding))
        seconds = timing.best_times(calls, warmup=1, rounds=repeats)
        voxels = x_shape[0] * math.prod(x_shape[2:])
        rows.append({"problem": name, "x": x_shape, "w": w_shape, "chunks": chunks,
                     "seconds": dict(zip(["in memory", *clients], seconds)),
                     "voxels_per_s": dict(zip(["in memory", *clients], (voxels / s for s in seconds)))})
    return rows


def per_block(client, repeats):
    """Rows of seconds per block by chunk size on ``client``'s cluster, and the in-memory time."""
    w = np.random.default_rng(1).standard_normal((1, 1, 3, 3)).astype(np.float32)
    x_here = _random(BLOCK_IMAGE, BLOCK_IMAGE, seed=1).compute(scheduler="sync")
    calls, blocks = [lambda: nc.conv2d(x_here, w, padding="same")], []
    for size in BLOCK_SIZES:
        x = _random(BLOCK_IMAGE, (1, 1, size, size), seed=1)
        calls.append(_on_cluster(client, ncd.conv2d, client.persist(x), w, "same"))
        blocks.append(math.prod(x.numblocks))
    in_memory, *seconds = timing.best_times(calls, warmup=1, rounds=repeats)
    return in_memory, [{"chunk": size, "blocks": count, "seconds": s, "ms_per_block": 1e3 * s / count}
                       for size, count, s in zip(BLOCK_SIZES, blocks, seconds)]


def main(repeats=5, json_path=None):
    print(f"{platform.processor() or platform.machine()}, {CPU_COUNT} cores, Numba {numba.__version__} "
          f"({numba.get_num_threads()} threads in memory), numbaconv {nc.__version__}")
    started = {name: _cluster(workers) for name, workers in CLUSTERS.items()}
    try:
        clients = {name: client for name, (_, client) in started.items()}
        for name, client in clients.items():
            threads = client.submit(ncd.task_threads, pure=False).result()
            print(f"{name}: Numba threads per block {threads}")
        rows = throughput(clients, repeats)
        print(f"\n1. throughput, million input voxels per second (seconds, best of {repeats})")
        names = ["in memory", *clients]
        print(f"{'problem':<30}" + "".join(f"{name:>24}" for name in names))
        for row in rows:
            print(f"{row['problem']:<30}" + "".join(
                f"{row['voxels_per_s'][name] / 1e6:>14.1f} ({row['seconds'][name]:6.3f} s)" for name in names))
        in_memory, blocks = per_block(clients["2 workers x 1 thread"], repeats)
        print(f"\n2. per block, 512x512 image, 3x3 filter, 2 workers x 1 thread "
              f"(in memory, whole image: {in_memory * 1e3:.2f} ms)")
        print(f"{'chunk':>8}{'blocks':>8}{'seconds':>10}{'ms / block':>12}")
        for row in blocks:
            print(f"{row['chunk']:>8}{row['blocks']:>8}{row['seconds']:>10.3f}{row['ms_per_block']:>12.2f}")
    finally:
        for cluster, client in started.values():
            client.close()
            cluster.close()
    result = {"cores": CPU_COUNT, "throughput": rows, "per_block": {"in_memory_s": in_memory, "rows": blocks}}
    if json_path:
        with open(json_path, "w") as file:
            json.dump(result, file, indent=1)
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="timed rounds (default 5)")
    parser.add_argument("--json", default=None, help="also write the numbers to this file")
    arguments = parser.parse_args()
    main(arguments.repeats, arguments.json)
