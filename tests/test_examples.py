"""Smoke tests: each example runs in-process on its reduced size and produces its results."""
import importlib.util
import os

import numpy as np
import pytest

EXAMPLES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples")


def _load(name, *requirements):
    """The example module ``examples/<name>.py``; skips (visibly) when a requirement is missing."""
    for requirement in requirements:
        pytest.importorskip(requirement, reason=f"examples/{name}.py needs {requirement}: "
                                                f'pip install -e ".[test,examples]"')
    spec = importlib.util.spec_from_file_location(f"example_{name}", os.path.join(EXAMPLES, f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _assert_png(path):
    with open(path, "rb") as file:
        assert file.read(8) == b"\x89PNG\r\n\x1a\n", path


def test_learn_edge_kernel_recovers_the_kernel(capsys):
    kernel, losses = _load("learn_edge_kernel").main()
    np.testing.assert_allclose(kernel, [[1.0, -1.0]], atol=5e-3)
    assert losses[-1] < 1e-3 * losses[0]
    assert "learned kernel" in capsys.readouterr().out


def test_edges_and_blur_matches_scipy_and_writes_pngs(tmp_path, capsys):
    example = _load("edges_and_blur", "scipy", "skimage", "matplotlib")
    paths = example.main(small=True, out_dir=str(tmp_path))
    for path in paths.values():
        _assert_png(path)
    assert str(tmp_path) in capsys.readouterr().out


def test_edges_and_blur_checks_can_fail():
    """The scipy comparison raises on a wrong result (here: the kernel flipped)."""
    example = _load("edges_and_blur", "scipy")
    image = np.random.default_rng(0).random((16, 12))
    magnitude, blurred = example.filter_image(image)
    example.check_against_scipy(image, magnitude, blurred)
    with pytest.raises(AssertionError, match="disagree"):
        example.check_against_scipy(image, magnitude, blurred[::-1])


def test_digits_cnn_three_runs_agree(tmp_path, capsys):
    example = _load("digits_cnn", "torch", "sklearn", "matplotlib")
    outcome = example.main(small=True, out_dir=str(tmp_path))
    losses = {name: np.array(result[0]) for name, result in outcome["results"].items()}
    reference = losses.pop("torch.nn.Conv2d")
    assert len(reference) == 4 and np.all(np.isfinite(reference))
    for name, curve in losses.items():   # same start, same data order: float32 rounding apart
        np.testing.assert_allclose(curve, reference, rtol=1e-3, err_msg=name)
    assert set(outcome["step_seconds"]) == {"torch.nn.Conv2d", "numbaconv.torch.Conv2d"}
    _assert_png(outcome["plot"])
    printed = capsys.readouterr().out
    assert "accuracy" in printed and "ratio (torch / numbaconv)" in printed


def test_large_volume_filters_out_of_core_and_matches_in_memory(tmp_path, capsys):
    example = _load("large_volume", "dask", "distributed", "zarr")
    outcome = example.main(shape=(20, 24, 28), chunks=(8, 10, 12), out_dir=str(tmp_path / "stores"), samples=2)
    assert outcome["error"] <= example.TOLERANCE
    assert outcome["voxels_per_second"] > 0 and len(outcome["peak_bytes"]) == 2
    assert list((tmp_path / "stores").iterdir()) == []      # the stores removed without keep=True
    printed = capsys.readouterr().out
    assert "voxels/s" in printed and "peak memory of each worker" in printed
