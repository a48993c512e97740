"""The numbaconv command: info, bench and verify, their output, their errors and exit codes."""
import json
import subprocess
import sys

import numpy as np
import pytest

from numbaconv import dispatch
from numbaconv.accuracy import TOLERANCE
from numbaconv.passes import PASSES
from numbaconv.spec import ConvSpec
from numbaconv.tools import bench, cli, compiletime, suite

TINY = ["--layer", "batch1_16ch", "--budget", "0", "--repeats", "1"]


def run(capsys, *argv):
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_info_names_versions_devices_and_threads(capsys):
    code, out, _ = run(capsys, "info")
    assert code == 0
    for key in ("numbaconv:", "numba:", "numpy:", "torch:", "devices:", "numba threading layer:",
                "numba threads:", "cpu:", "cpu cores:", "gpu:", "compile cache:"):
        assert key in out


def test_bench_table_json_and_plot(capsys, tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("matplotlib")
    json_path, png_path = tmp_path / "rows.json", tmp_path / "speed.png"
    code, out, _ = run(capsys, "bench", *TINY, "--json", str(json_path), "--plot", str(png_path))
    assert code == 0, out
    assert "practical CPU peak" in out and "vs torch" in out and "malloc" in out
    lines = [line for line in out.splitlines() if line.startswith("batch1_16ch")]
    # every algorithm that runs the layer, PyTorch and the reference, for each of the three passes
    labels = {line.split()[2].rstrip("*") for line in lines}
    runnable = dispatch.runnable("cpu", suite.LAYERS["batch1_16ch"].spec.as_3d())
    assert labels == {f"cpu/{name}" for name in runnable} | {"torch-cpu", "cpu/reference"}
    assert {line.split()[1] for line in lines} == set(PASSES)
    assert sum(line.split()[2].endswith("*") for line in lines) == 3   # auto's pick, once per pass
    rows = json.loads(json_path.read_text())["rows"]
    assert len(rows) == len(lines)
    for row in rows:
        assert row["correct"] and row["best_ms"] > 0 and row["gflops"] > 0
        assert row["error"] <= TOLERANCE["float32"] or row["implementation"] == "cpu/reference"
        assert row["vs_torch"] > 0
    assert png_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bench_without_torch_installed(capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)    # import torch now raises ImportError
    code, out, _ = run(capsys, "bench", *TINY, "--pass", "forward", "--dtype", "float64")
    assert code == 0
    assert "torch-cpu" not in out
    assert "empty because PyTorch is not installed" in out
    assert "cpu/im2col" in out


def test_bench_without_torch_by_choice(capsys):
    code, out, _ = run(capsys, "bench", *TINY, "--pass", "weight", "--algo", "auto", "--without-torch",
                       "--default-malloc")
    assert code == 0
    assert "left out (--without-torch)" in out and "malloc left as it is (--default-malloc)" in out
    rows = [line for line in out.splitlines() if line.startswith("batch1_16ch")]
    assert [row.split()[2] for row in rows] == [f"cpu/auto={bench.auto_choice('cpu', suite.LAYERS['batch1_16ch'], 'weight')}", "cpu/reference"]


def _break_direct_forward(monkeypatch):
    direct = dispatch.REGISTRY["cpu"]["direct"]
    original = direct.forward

    def off_by_a_little(spec, x, w, out):
        original(spec, x, w, out)
        out.flat[0] += 1.0
    monkeypatch.setattr(direct, "forward", off_by_a_little)


def test_bench_reports_a_wrong_kernel_and_exits_1(capsys, monkeypatch):
    _break_direct_forward(monkeypatch)
    code, out, _ = run(capsys, "bench", *TINY, "--pass", "forward", "--without-torch")
    assert code == 1
    assert "MISMATCH" in out and "cpu/direct" in out.splitlines()[-1]


def test_verify_passes_every_algorithm(capsys):
    code, out, _ = run(capsys, "verify", "--draws", "1", "--device", "cpu")
    assert code == 0, out
    for name in dispatch.algorithms("cpu"):
        for pass_name in PASSES:
            line = next(line for line in out.splitlines() if line.startswith(f"cpu/{name} ") and pass_name in line)
            checked = int(line.split()[2])
            assert checked > 0 and line.endswith("ok")


def test_verify_catches_a_wrong_kernel(capsys, monkeypatch):
    _break_direct_forward(monkeypatch)
    code, out, _ = run(capsys, "verify", "--draws", "1", "--algo", "direct", "--device", "cpu")
    assert code == 1
    assert "MISMATCH" in out


@pytest.mark.parametrize("argv, message", [
    (["bench", "--layer", "resnet9000"], "unknown layer 'resnet9000'"),
    (["bench", "--device", "tpu"], "unknown device 'tpu'"),
    (["bench", "--algo", "karatsuba"], "unknown algorithm 'karatsuba'"),
    (["bench", "--pass", "sideways"], "unknown pass 'sideways'"),
    (["bench", "--suite", "huge"], "invalid choice: 'huge'"),
    (["bench", "--dtype", "float16"], "invalid choice: 'float16'"),
    (["bench", "--repeats", "0"], "--repeats must be at least 1"),
    (["verify", "--algo", "direct,karatsuba"], "unknown algorithm 'karatsuba'"),
    (["verify", "--draws", "many"], "invalid int value: 'many'"),
    (["frobnicate"], "invalid choice: 'frobnicate'"),
])
def test_bad_arguments_give_one_line_and_exit_2(capsys, argv, message):
    with pytest.raises(SystemExit) as stop:
        cli.main(argv)
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert message in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_cuda_without_a_gpu_is_a_bad_argument(capsys, monkeypatch):
    monkeypatch.setattr(cli, "available_devices", lambda: ("cpu",))
    for command in ("bench", "verify"):
        with pytest.raises(SystemExit) as stop:
            cli.main([command, "--device", "cuda"])
        assert stop.value.code == 2
        assert "device 'cuda' is not available here" in capsys.readouterr().err


def test_no_command_prints_help_and_exits_2(capsys):
    assert cli.main([]) == 2
    assert "info" in capsys.readouterr().out


def test_command_runs_as_a_process():
    done = subprocess.run([sys.executable, "-m", "numbaconv", "bench", "--layer", "nope"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and done.stderr.startswith("numbaconv")
    done = subprocess.run([sys.executable, "-m", "numbaconv", "info"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "numba threads:" in done.stdout


def test_problem_data_is_random_and_reproducible():
    layer = suite.LAYERS["batch1_16ch"]
    first, again = suite.Problem.create(layer, "float32"), suite.Problem.create(layer, "float32")
    assert np.array_equal(first.x, again.x) and np.count_nonzero(first.x) == first.x.size
    assert first.x.shape == layer.spec.x_shape and first.grad_y.shape == layer.spec.y_shape


def test_every_suite_layer_is_a_valid_problem():
    for names in suite.SUITES.values():
        assert set(names) <= set(suite.LAYERS)
    for layer in suite.LAYERS.values():
        assert layer.spec.flops > 0 and "GFLOP" in layer.describe()


def test_bench_measures_cuda_implementations_on_a_tiny_layer():
    """The GPU side of bench (device copies, timer, synchronisation, result to host), here on
    Numba's CUDA simulator (tests/conftest.py turns it on when there is no GPU)."""
    layer = suite.Layer("tiny", 1, 2, 3, (5, 4), (2, 2), padding=1)
    problem = suite.Problem.create(layer, "float64")
    candidates = bench.implementations(devices=("cpu", "cuda"), algos=["im2col"])
    assert {c.label for c in candidates} >= {"cpu/im2col", "cuda/im2col", "cpu/reference"}
    for pass_name in PASSES:
        rows = bench.compare(problem, pass_name, candidates, min_repeats=1, max_repeats=1, budget_s=0)
        for row in rows:
            assert row.correct and row.error <= TOLERANCE["float64"], row
            assert row.best_ms > 0


def test_tune_prints_the_winners_and_keeps_the_plans(capsys, tmp_path, monkeypatch):
    from numbaconv import tuning
    monkeypatch.setenv("NUMBACONV_CACHE_DIR", str(tmp_path))
    tuning.forget()
    code, out, _ = run(capsys, "tune", "--layer", "batch1_16ch", "--pass", "forward,weight", "--dtype", "float64")
    tuning.forget()
    assert code == 0
    rows = [line.split() for line in out.splitlines() if line.startswith("batch1_16ch")]
    assert [row[1] for row in rows] == ["forward", "weight"]
    assert all(row[2] in dispatch.algorithms("cpu") for row in rows)
    assert str(tmp_path) in out and len(list(tmp_path.glob("plans-*.json"))) == 1
    with pytest.raises(SystemExit) as stop:
        cli.main(["tune", "--layer", "nope"])
    assert stop.value.code == 2


def test_bench_reports_tune_pick_and_workspace(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("NUMBACONV_CACHE_DIR", str(tmp_path))
    json_path = tmp_path / "rows.json"
    code, out, _ = run(capsys, "bench", *TINY, "--pass", "forward", "--algo", "tune,direct,im2col",
                       "--without-torch", "--json", str(json_path))
    assert code == 0 and "ws MiB" in out
    rows = {row["implementation"]: row for row in json.loads(json_path.read_text())["rows"]}
    assert rows["cpu/tune"]["picked"] in dispatch.algorithms("cpu")
    assert rows["cpu/direct"]["workspace_mib"] == 0 and rows["cpu/im2col"]["workspace_mib"] > 0
    assert rows["cpu/reference"]["workspace_mib"] is None


def test_compile_time_has_a_problem_for_every_cpu_algorithm():
    for algo in dispatch.algorithms("cpu"):
        problem = compiletime.probe(algo)
        spec = ConvSpec.create(problem["x_shape"], problem["w_shape"], padding=problem["padding"],
                               groups=problem["groups"])
        assert dispatch.registry("cpu")[algo].supports(spec.as_3d()) is None


def test_compile_time_of_one_kernel(capsys):
    """Two child processes (cold and warm) for one algorithm, pass and dtype: a few seconds."""
    code, out, _ = run(capsys, "compile-time", "--algo", "direct", "--pass", "forward", "--dtype", "float64")
    assert code == 0
    assert "direct     forward  float64" in out and "cold compile of these 1" in out
    with pytest.raises(SystemExit) as stop:
        cli.main(["compile-time", "--algo", "fastest"])
    assert stop.value.code == 2


_FREED_MEMORY_CHILD = """
import sys, numpy as np
from numbaconv.tools import bench
if sys.argv[1] == "keep":
    print(bench.keep_freed_memory())
def resident_pages():
    return int(open("/proc/self/statm").read().split()[1])
block = np.ones(24 * 2**20 // 8)      # 24 MiB, touched
before = resident_pages()
del block
print(before - resident_pages())
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt, /proc")
def test_bench_keeps_freed_memory_for_reuse():
    """With the setting, a freed 24 MiB block stays in the process (the next call reuses it
    without page faults); with glibc's defaults it goes back to the system."""
    import subprocess
    released = {}
    for mode in ("keep", "default"):
        done = subprocess.run([sys.executable, "-c", _FREED_MEMORY_CHILD, mode], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        lines = done.stdout.split("\n")
        if mode == "keep" and "keeps freed memory" not in lines[0]:
            pytest.skip(f"not glibc: {lines[0]}")
        released[mode] = int(lines[-2]) * 4096
    assert released["keep"] < 2**20 and released["default"] > 16 * 2**20, released
