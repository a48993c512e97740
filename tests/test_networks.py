"""The networks suite: the layer lists against the published architectures, transposed layers
in the bench, and ``numbaconv bench --suite networks / --network``."""
import json
import math

import numpy as np
import pytest

from numbaconv.accuracy import TOLERANCE
from numbaconv.passes import PASSES
from numbaconv.tools import bench, cli, networks, report, suite

NETWORKS = networks.NETWORKS


def layers(name):
    return {entry.layer.name: entry for entry in NETWORKS[name].layers}


def test_convolution_counts():
    """(convolutions, distinct layers), counted from the architectures:
    ResNet-50: stem + 16 bottlenecks x 3 + 4 downsample shortcuts = 53;
    U-Net: 5 levels x 2 + 4 up-convolutions + 4 x 2 decoder convs + the final 1x1 = 23;
    wav2vec 2.0: 7 feature-encoder convs + the positional conv = 8;
    R3D-18: stem + 8 basic blocks x 2 + 3 downsample shortcuts = 20;
    MobileNetV2: stem + 17 blocks (16 with an expansion: 3 convs, the first 2) + the final 1x1 = 52."""
    expected = {"resnet50": (53, 23), "unet": (23, 19), "wav2vec2": (8, 8), "r3d_18": (20, 11),
                "mobilenet_v2": (52, 30)}
    assert {name: (n.convolutions, len(n.layers)) for name, n in NETWORKS.items()} == expected
    batches = {"resnet50": 4, "unet": 2, "wav2vec2": 4, "r3d_18": 1, "mobilenet_v2": 4}
    assert {name: n.batch for name, n in NETWORKS.items()} == batches
    for network in NETWORKS.values():
        assert len({entry.layer.name for entry in network.layers}) == len(network.layers)
        assert all(entry.layer.batch == network.batch for entry in network.layers)


@pytest.mark.parametrize("name, classifier, published", [
    ("resnet50", 2048 * 1000, 4.09), ("mobilenet_v2", 1280 * 1000, 0.30), ("r3d_18", 512 * 400, 40.70)])
def test_multiply_adds_match_torchvision(name, classifier, published):
    """torchvision's weight tables give GFLOPS (multiply-adds, classifier included) per sample:
    4.09 for resnet50, 0.30 for mobilenet_v2, 40.70 for r3d_18."""
    network = NETWORKS[name]
    macs = sum(e.count * e.layer.spec.flops for e in network.layers) / 2 / network.batch + classifier
    assert round(macs / 1e9, 2) == published


def test_first_layer_alone_needs_no_input_gradient():
    for network in NETWORKS.values():
        first, *rest = network.layers
        assert not first.input_grad and first.passes == ("forward", "weight")
        assert all(entry.input_grad and entry.passes == PASSES for entry in rest)
        assert first.layer.in_channels in (1, 3) and first.count == 1


def test_resnet50_layers():
    found = layers("resnet50")
    stem = found["7x7s2_3to64_224"].layer
    assert (stem.x_shape, stem.w_shape, stem.stride, stem.padding, stem.y_shape) == \
        ((4, 3, 224, 224), (64, 3, 7, 7), 2, 3, (4, 64, 112, 112))
    # layer1's three conv3 and its downsample shortcut: the same problem, 64 -> 256 at 56x56
    assert found["1x1_64to256_56"].count == 4
    counts = {name: entry.count for name, entry in found.items()}
    # v1.5: the stride in each stage's first 3x3, and the stride-2 1x1 shortcuts
    assert [counts[n] for n in ("3x3s2_128to128_56", "3x3s2_256to256_28", "3x3s2_512to512_14")] == [1, 1, 1]
    assert [counts[n] for n in ("1x1s2_256to512_56", "1x1s2_512to1024_28", "1x1s2_1024to2048_14")] == [1, 1, 1]
    assert [counts[n] for n in ("3x3_64to64_56", "3x3_128to128_28", "3x3_256to256_14", "3x3_512to512_7")] == [3, 3, 5, 2]
    assert [counts[n] for n in ("1x1_512to128_28", "1x1_1024to256_14", "1x1_2048to512_7")] == [3, 5, 2]
    assert found["1x1_512to2048_7"].layer.y_shape == (4, 2048, 7, 7)
    assert {entry.layer.size for entry in found.values()} == {(224, 224), (56, 56), (28, 28), (14, 14), (7, 7)}


def test_unet_layers():
    found = layers("unet")
    ups = [entry.layer for entry in found.values() if entry.layer.transposed]
    assert [(u.in_channels, u.out_channels, u.size, u.kernel, u.stride) for u in ups] == [
        (512, 256, (16, 16), (2, 2), 2), (256, 128, (32, 32), (2, 2), 2),
        (128, 64, (64, 64), (2, 2), 2), (64, 32, (128, 128), (2, 2), 2)]
    assert ups[0].w_shape == (512, 256, 2, 2) and ups[0].y_shape == (2, 256, 32, 32)
    # after each up-convolution the skip is concatenated: twice the channels into the first 3x3
    for width, size in ((256, 32), (128, 64), (64, 128), (32, 256)):
        assert found[f"3x3_{2 * width}to{width}_{size}"].count == 1
        assert found[f"3x3_{width}to{width}_{size}"].count == 2     # encoder and decoder
    assert found["3x3_512to512_16"].count == 1 and found["3x3_1to32_256"].layer.x_shape == (2, 1, 256, 256)
    final = found["1x1_32to2_256"].layer
    assert final.y_shape == (2, 2, 256, 256)
    assert all(e.layer.padding == 1 for e in found.values() if e.layer.kernel == (3, 3))


def test_wav2vec2_layers():
    entries = NETWORKS["wav2vec2"].layers
    assert [(e.layer.size[0], e.layer.kernel[0], e.layer.stride) for e in entries[:7]] == [
        (16000, 10, 5), (3199, 3, 2), (1599, 3, 2), (799, 3, 2), (399, 3, 2), (199, 2, 2), (99, 2, 2)]
    assert entries[6].layer.y_shape == (4, 512, 49)
    positional = entries[7].layer
    assert (positional.x_shape, positional.w_shape, positional.padding, positional.groups) == \
        ((4, 768, 49), (768, 48, 128), 64, 16)


def test_r3d_18_layers():
    found = layers("r3d_18")
    stem = found["3x7x7s1x2x2_3to64_16x112x112"].layer
    assert (stem.w_shape, stem.stride, stem.padding, stem.y_shape) == \
        ((64, 3, 3, 7, 7), (1, 2, 2), (1, 3, 3), (1, 64, 16, 56, 56))
    counts = {name: entry.count for name, entry in found.items()}
    assert [counts[n] for n in ("3x3x3_64to64_16x56x56", "3x3x3_128to128_8x28x28", "3x3x3_256to256_4x14x14",
                                "3x3x3_512to512_2x7x7")] == [4, 3, 3, 3]
    shortcuts = [e.layer for e in found.values() if e.layer.kernel == (1, 1, 1)]
    assert [(s.in_channels, s.out_channels, s.stride) for s in shortcuts] == [(64, 128, 2), (128, 256, 2), (256, 512, 2)]
    assert found["3x3x3_512to512_2x7x7"].layer.y_shape == (1, 512, 2, 7, 7)


def test_mobilenet_v2_layers():
    found = layers("mobilenet_v2")
    depthwise = {name: e for name, e in found.items() if e.layer.groups > 1}
    assert all(e.layer.groups == e.layer.in_channels == e.layer.out_channels for e in depthwise.values())
    assert sum(e.count for e in depthwise.values()) == 17
    strided = sorted((e.layer.size[0], e.layer.in_channels) for e in depthwise.values() if e.layer.stride == 2)
    assert strided == [(14, 576), (28, 192), (56, 144), (112, 96)]
    assert found["3x3s2_3to32_224"].layer.y_shape == (4, 32, 112, 112)
    assert found["1x1_320to1280_7"].layer.x_shape == (4, 320, 7, 7)
    assert found["1x1_64to384_14"].count == 4 and found["dw3x3_384_14"].count == 4
    pointwise = sum(e.count for e in found.values() if e.layer.kernel == (1, 1))
    assert pointwise == 16 + 17 + 1     # expansions, projections, the final 1x1


def test_at_batch_changes_only_the_batch():
    small = NETWORKS["unet"].at_batch(1)
    assert small.batch == 1 and small.title.startswith("U-Net") and "N=1" in small.title
    assert [e.layer.name for e in small.layers] == [e.layer.name for e in NETWORKS["unet"].layers]
    assert [e.count for e in small.layers] == [e.count for e in NETWORKS["unet"].layers]


def test_transposed_layer_passes_match_torch_autograd():
    """A transposed layer's passes in the bench (numbaconv: conv_transpose, and the forward and
    weight gradient of the convolution from its output to its input; PyTorch:
    aten.convolution_backward with transposed=True) against torch.autograd on conv_transpose."""
    torch = pytest.importorskip("torch")
    layer = suite.Layer("up", 2, 4, 3, (5, 6), (2, 3), stride=2, padding=(0, 1), transposed=True)
    assert layer.w_shape == (4, 3, 2, 3) and layer.y_shape == (2, 3, 10, 11)
    assert [layer.kernel_pass(p) for p in PASSES] == ["input", "forward", "weight"]
    problem = suite.Problem.create(layer, "float64")
    x, w = (torch.from_numpy(a).requires_grad_() for a in (problem.x, problem.w))
    y = torch.nn.functional.conv_transpose2d(x, w, stride=2, padding=(0, 1))
    y.backward(torch.from_numpy(problem.grad_y))
    expected = {"forward": y.detach().numpy(), "input": x.grad.numpy(), "weight": w.grad.numpy()}
    candidates = [c for c in bench.implementations(("cpu",), ["auto", "direct"], torch) if bench.runs(c, layer)]
    for pass_name in PASSES:
        assert np.allclose(bench.truth(problem, pass_name, torch), expected[pass_name])
        assert np.allclose(bench.truth(problem, pass_name), expected[pass_name])    # numbaconv.reference
        rows = bench.compare(problem, pass_name, candidates, torch, min_repeats=1, max_repeats=1, budget_s=0)
        assert {row.implementation for row in rows} == {"cpu/auto", "cpu/direct", "torch-cpu", "cpu/reference"}
        assert all(row.correct and row.error <= TOLERANCE["float64"] for row in rows), rows


def test_transposed_layer_on_cuda():
    """The GPU side of a transposed layer's three passes (on Numba's CUDA simulator without a GPU)."""
    layer = suite.Layer("up", 1, 1, 2, (2, 3), (1, 2), stride=(1, 2), transposed=True)   # small: simulated threads are slow
    problem = suite.Problem.create(layer, "float64")
    candidates = bench.implementations(devices=("cpu", "cuda"), algos=["auto"])
    assert {c.label for c in candidates} >= {"cpu/auto", "cuda/auto"}
    for pass_name in PASSES:
        rows = bench.compare(problem, pass_name, candidates, min_repeats=1, max_repeats=1, budget_s=0)
        assert all(row.correct and row.error <= TOLERANCE["float64"] for row in rows), rows


def run(capsys, *argv):
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def no_peak(monkeypatch):
    """Leaves out the 2048^3 matrix products that measure the CPU's peak (seconds)."""
    monkeypatch.setattr(bench, "cpu_peak_gflops", lambda: 100.0)


def test_bench_network_without_torch_prints_the_summary(capsys, no_peak):
    """wav2vec 2.0's eight layers (batch 1, forward only, to keep it to seconds)."""
    code, out, _ = run(capsys, "bench", "--network", "wav2vec2", "--batch", "1", "--pass", "forward",
                       "--budget", "0", "--repeats", "1", "--without-torch")
    assert code == 0, out
    assert "wav2vec 2.0 feature encoder + positional conv (N=1, 1x16000): 8 convolutions, 8 distinct" in out
    names = [entry.layer.name for entry in NETWORKS["wav2vec2"].layers]
    listed = [line.split()[1] for line in out.splitlines() if line.startswith("    1 ")]
    table = [line.split()[0] for line in out.splitlines() if line.startswith(tuple(names))]
    assert listed == names and table == names      # the layer list, then the table
    summary = next(line for line in out.splitlines() if line.startswith("wav2vec2 "))
    assert summary.split()[:3] == ["wav2vec2", "cpu/auto", "8/8"]
    assert "No ratios: it was left out (--without-torch)" in out and "whole run" in out


def _tiny_networks():
    """Two small networks with what the real ones hold: a first layer, repeated layers, a
    transposed one, 3-d with per-dim stride and padding, 1-d grouped."""
    walk = networks._Walk(2, 2)
    plane = walk.conv(1, 4, 12, 3, padding=1)
    walk.conv(4, 4, plane, 3, padding=1)
    walk.conv(4, 4, plane, 3, padding=1)
    up = walk.conv(4, 2, plane, 2, stride=2, transposed=True)
    walk.conv(2, 3, up, 1)
    image = walk.network("tiny2d", "tiny 2-d", "1x12x12")
    walk = networks._Walk(1, 3)
    volume = walk.conv(2, 4, (4, 8, 8), (3, 3, 3), stride=(1, 2, 2), padding=(1, 1, 1))
    walk.conv(4, 4, volume, 1, stride=2)
    video = walk.network("tiny3d", "tiny 3-d", "2x4x8x8")
    walk = networks._Walk(2, 1)
    walk.conv(8, 8, 20, 5, padding=2, groups=4)
    audio = walk.network("tiny1d", "tiny 1-d", "8x20")
    return {n.name: n for n in (image, video, audio)}


def test_bench_networks_with_torch_json_and_plots(capsys, tmp_path, monkeypatch, no_peak):
    pytest.importorskip("torch")
    pytest.importorskip("matplotlib")
    monkeypatch.setattr(networks, "SUITE", _tiny_networks())
    json_path, png = tmp_path / "nets.json", tmp_path / "nets.png"
    code, out, _ = run(capsys, "bench", "--suite", "networks", "--budget", "0", "--repeats", "1",
                       "--json", str(json_path), "--plot", str(png))
    assert code == 0, out
    assert "tiny 2-d (N=2, 1x12x12): 5 convolutions, 4 distinct" in out
    data = json.loads(json_path.read_text())
    rows = data["rows"]
    assert {row["implementation"] for row in rows} == {"cpu/auto", "torch-cpu"}
    assert all(row["correct"] and row["vs_torch"] > 0 for row in rows)
    first = [row for row in rows if row["network"] == "tiny2d" and row["layer"] == "3x3_1to4_12"]
    assert sorted({row["pass_name"] for row in first}) == ["forward", "weight"]      # no input gradient
    assert {row["count"] for row in rows if row["layer"] == "3x3_4to4_12"} == {2}
    for summary in data["networks"]:
        mine = [row for row in rows if row["network"] == summary["network"]]

        def weighted(label, passes):
            return sum(r["count"] * r["best_ms"] for r in mine if r["implementation"] == label and r["pass_name"] in passes)
        for which, passes in (("forward", {"forward"}), ("training", set(PASSES))):
            expected = weighted("torch-cpu", passes) / weighted("cpu/auto", passes)
            assert math.isclose(summary[which]["ratio"], expected, rel_tol=1e-9)
            assert summary[which]["worst_layer"] in {r["layer"] for r in mine}
        line = next(line for line in out.splitlines() if line.startswith(summary["network"] + " "))
        assert f"{summary['forward']['ratio']:.2f}" in line and f"{summary['training']['ratio']:.2f}" in line
    for name in ("tiny2d", "tiny3d", "tiny1d"):
        assert (tmp_path / f"nets-{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_network_summary_weights_by_count():
    def row(layer, pass_name, label, ms, count):
        return report.Row(layer, pass_name, "float32", label, "cpu", 10, ms, best_ms=ms, network="n", count=count)
    rows = [row("a", "forward", "cpu/auto", 1.0, 3), row("a", "forward", "torch-cpu", 2.0, 3),
            row("b", "forward", "cpu/auto", 4.0, 1), row("b", "forward", "torch-cpu", 2.0, 1)]
    [summary] = report.network_summaries(rows, {"n": "N"}, training=False)
    assert summary.kinds == ["forward"]
    assert summary.ratio("forward") == (3 * 2 + 2) / (3 * 1 + 4)
    assert summary.worst("forward") == ("b", 0.5)


@pytest.mark.parametrize("argv, message", [
    (["bench", "--network", "alexnet"], "unknown network 'alexnet'"),
    (["bench", "--network", "unet", "--layer", "conv3x3_64"], "--layer and --network cannot be combined"),
    (["bench", "--network", "unet", "--batch", "0"], "--batch must be at least 1"),
    (["bench", "--batch", "2"], "--batch applies to the networks suite"),
])
def test_bad_network_arguments_exit_2(capsys, argv, message):
    with pytest.raises(SystemExit) as stop:
        cli.main(argv)
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_depthwise_grouped_extras():
    """The extra layers of the networks suite: not a network, each layer once, every pass timed."""
    extras = networks.SUITE["depthwise_grouped"]
    assert set(networks.SUITE) == {*NETWORKS, "depthwise_grouped"}
    shapes = {e.layer.name: (e.layer.x_shape, e.layer.w_shape, e.layer.stride, e.layer.groups, e.layer.y_shape)
              for e in extras.layers}
    assert shapes == {
        "dw7x7_384_14": ((2, 384, 14, 14), (384, 1, 7, 7), 1, 384, (2, 384, 14, 14)),
        "dw7x7_768_7": ((2, 768, 7, 7), (768, 1, 7, 7), 1, 768, (2, 768, 7, 7)),
        "dw5x5s2_240_28": ((4, 240, 28, 28), (240, 1, 5, 5), 2, 240, (4, 240, 14, 14)),
        "3x3g32_256to256_28": ((4, 256, 28, 28), (256, 8, 3, 3), 1, 32, (4, 256, 28, 28)),
        "3x3g32_512to512_14": ((4, 512, 14, 14), (512, 16, 3, 3), 1, 32, (4, 512, 14, 14)),
    }
    assert all(e.count == 1 and e.passes == PASSES for e in extras.layers)
    assert extras.title.startswith("Depthwise and grouped layers (not a network) (N=2-4")


@pytest.mark.parametrize("x_shape, w_shape, arguments", [
    ((2, 4, 9, 9), (6, 2, 3, 3), {"stride": 2, "padding": 1, "groups": 2}),
    ((2, 4, 12), (6, 4, 5), {"padding": 2, "dilation": 2}),
])
def test_bench_scripts_time_the_same_pass_in_both_libraries(rng, x_shape, w_shape, arguments):
    """bench/*.py's calls (numbaconv.tools.bench.calls_in_turn): PyTorch's, then numbaconv's with
    each algorithm, and every one of them computes the same pass."""
    torch = pytest.importorskip("torch")
    from numbaconv.spec import ConvSpec
    spec = ConvSpec.create(x_shape, w_shape, **arguments)
    x, w, grad_y = (rng.standard_normal(shape) for shape in (spec.x_shape, spec.w_shape, spec.y_shape))
    for pass_name in ("forward", "input", "weight"):
        calls = bench.calls_in_turn(torch, x, w, grad_y, arguments, pass_name, ["im2col", "direct"])
        results = [np.asarray(call()) for call in calls]
        assert len(results) == 3
        for result in results[1:]:
            np.testing.assert_allclose(result, results[0], rtol=1e-10, atol=1e-10)
