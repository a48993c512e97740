"""Data-parallel training: a small CNN of numbaconv.torch layers trained with
torch.nn.parallel.DistributedDataParallel over 2 processes (gloo, loopback) ends with the
parameters of single-process training on the same global batch."""
import socket

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


def test_distributed_data_parallel_equals_single_process_training(tmp_path):
    out_path = tmp_path / "ddp.npz"
    mp.spawn(_data_parallel_worker, args=(_free_port(), str(out_path)), nprocs=WORLD_SIZE)
    with np.load(out_path) as saved:
        data_parallel = [saved[f"arr_{i}"] for i in range(len(saved.files))]
    single = _train(_model(), *_data())
    initial = [p.detach().numpy() for p in _model().parameters()]
    assert len(data_parallel) == len(single) == len(initial)
    for ddp, one, start in zip(data_parallel, single, initial):
        assert not np.allclose(one, start), "training did not move a parameter"
        error = np.linalg.norm(ddp - one) / np.linalg.norm(one)
        assert error <= TOLERANCE, f"relative difference {error:.2e}"
