"""Data-parallel training: a small CNN of numbaconv.torch layers trained with
torch.nn.parallel.DistributedDataParallel over 2 processes (gloo, loopback) ends with the
parameters of single-process training on the same global batch."""
import socket
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="PyTorch is not installed: numbaconv.torch is skipped")
import torch.distributed as dist  # noqa: E402
import torch.multiprocessing as mp  # noqa: E402

import numbaconv.torch as nct  # noqa: E402

pytestmark = pytest.mark.skipif(not dist.is_available(), reason="this PyTorch has no torch.distributed")

WORLD_SIZE = 2
GLOBAL_BATCH = 8
STEPS = 4
TOLERANCE = 1e-5     # float32, norm-relative per parameter
SPAWN_ATTEMPTS = 3   # the group is started again when a worker is killed by a signal (_spawn_workers)


def _model():
    torch.manual_seed(0)       # the same initial weights in every process
    return torch.nn.Sequential(
        nct.Conv2d(1, 4, 3, padding=1), torch.nn.ReLU(),
        nct.Conv2d(4, 6, 3, stride=2, padding=1), torch.nn.ReLU(),
        torch.nn.Flatten(), torch.nn.Linear(6 * 4 * 4, 3))


def _data():
    generator = torch.Generator().manual_seed(1)
    return torch.randn(GLOBAL_BATCH, 1, 8, 8, generator=generator), torch.randint(0, 3, (GLOBAL_BATCH,), generator=generator)


def _train(model, images, labels):
    """STEPS of SGD on mean cross-entropy; returns the parameters as NumPy arrays."""
    optimizer = torch.optim.SGD(model.parameters(), lr=0.2)
    for _ in range(STEPS):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(images), labels).backward()
        optimizer.step()
    return [p.detach().numpy().copy() for p in model.parameters()]


def _data_parallel_worker(rank, port, out_path):
    """One process of the group: its half of the global batch; DDP averages the gradients."""
    torch.set_num_threads(1)   # two processes on the machine's cores
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD_SIZE)
    try:
        model = torch.nn.parallel.DistributedDataParallel(_model())
        images, labels = _data()
        share = slice(rank * GLOBAL_BATCH // WORLD_SIZE, (rank + 1) * GLOBAL_BATCH // WORLD_SIZE)
        parameters = _train(model, images[share], labels[share])
        if rank == 0:
            np.savez(out_path, *parameters)
    finally:
        dist.destroy_process_group()


def _free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _spawn_workers(out_path):
    """Run the group. A worker killed by a signal starts the group again, with a warning, at most
    SPAWN_ATTEMPTS times: on a loaded 2-core machine a worker has aborted at random in gloo's
    C++ runtime ('terminate called without an active exception', SIGABRT) in 2 of 8 full test
    runs, never in a run of this test alone. A worker that raises, or the same crash every
    time, fails the test."""
    for attempt in range(SPAWN_ATTEMPTS):
        try:
            mp.spawn(_data_parallel_worker, args=(_free_port(), str(out_path)), nprocs=WORLD_SIZE)
            return
        except mp.ProcessExitedException as error:
            if error.signal_name is None or attempt == SPAWN_ATTEMPTS - 1:
                raise
            warnings.warn(f"data-parallel worker {error.error_index} killed by {error.signal_name}; starting again")


def test_distributed_data_parallel_equals_single_process_training(tmp_path):
    out_path = tmp_path / "ddp.npz"
    _spawn_workers(out_path)
    with np.load(out_path) as saved:
        data_parallel = [saved[f"arr_{i}"] for i in range(len(saved.files))]
    single = _train(_model(), *_data())
    initial = [p.detach().numpy() for p in _model().parameters()]
    assert len(data_parallel) == len(single) == len(initial)
    for ddp, one, start in zip(data_parallel, single, initial):
        assert not np.allclose(one, start), "training did not move a parameter"
        error = np.linalg.norm(ddp - one) / np.linalg.norm(one)
        assert error <= TOLERANCE, f"relative difference {error:.2e}"
