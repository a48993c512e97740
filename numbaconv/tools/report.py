"""What ``numbaconv bench`` reports: one Row per (layer, pass, implementation), as a table, as
JSON-ready values, and as a bar chart; for the networks suite, per network the count-weighted
ratios against PyTorch, the worst layers, a table per layer and a chart per network."""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from ..passes import PASSES


@dataclass
class Row:
    """One line of the report."""

    layer: str
    pass_name: str
    dtype: str
    implementation: str
    device: str
    flops: int
    first_ms: float
    best_ms: float = math.nan
    error: float = math.nan
    correct: bool = True
    auto_pick: bool = False     # this algorithm is the one algo="auto" picks
    picked: str = ""            # for the "auto" and "tune" rows: the algorithm it ran
    vs_torch: float = math.nan
    percent_of_peak: float = math.nan
    workspace_mib: float = math.nan   # numbaconv on the CPU: scratch one call borrows
    network: str = ""           # the networks suite: the network the layer belongs to
    count: int = 1              # ... and how many times the network runs the layer

    @property
    def gflops(self) -> float:
        return self.flops / (self.best_ms * 1e-3) / 1e9

    def as_dict(self) -> dict:
        """The row as JSON-ready values (NaN, meaning "not measured", becomes None)."""
        values = dict(dataclasses.asdict(self), gflops=self.gflops)
        return {key: None if isinstance(value, float) and math.isnan(value) else value
                for key, value in values.items()}


def format_table(rows: list[Row], torch_note: str | None = None) -> str:
    """The report as aligned text; '*' marks the algorithm algo="auto" picks."""
    header = (f"{'layer':<18}{'pass':<9}{'implementation':<18}{'ms':>10}{'GFLOP/s':>9}{'%peak':>7}"
              f"{'vs torch':>9}{'rel err':>10}{'ws MiB':>9}")
    lines = [header, "-" * len(header)]
    previous = None
    for row in rows:
        if previous is not None and (row.layer, row.pass_name) != previous:
            lines.append("")
        previous = (row.layer, row.pass_name)
        label = row.implementation + ("*" if row.auto_pick else "") + (f"={row.picked}" if row.picked else "")
        if not row.correct:
            lines.append(f"{row.layer:<18}{row.pass_name:<9}{label:<18}"
                         f"{'MISMATCH: not timed':>35}{row.error:>10.1e}")
            continue
        vs_torch = "" if math.isnan(row.vs_torch) else f"{row.vs_torch:.2f}x"
        peak = "" if math.isnan(row.percent_of_peak) else f"{row.percent_of_peak:.0f}"
        scratch = "" if math.isnan(row.workspace_mib) else f"{row.workspace_mib:.1f}"
        lines.append(f"{row.layer:<18}{row.pass_name:<9}{label:<18}{row.best_ms:>10.3f}{row.gflops:>9.1f}"
                     f"{peak:>7}{vs_torch:>9}{row.error:>10.1e}{scratch:>9}")
    lines.append("")
    if any(row.auto_pick for row in rows):
        lines.append("* = the algorithm algo=\"auto\" picks.")
    lines.append("vs torch = PyTorch time / this time on the same device (above 1: faster than PyTorch); "
                 "rel err = ||result - float64 truth|| / ||truth||;\n"
                 "ws MiB = scratch numbaconv's CPU algorithms borrowed in one call, all threads together "
                 "(numbaconv.cpu.workspace: all their scratch, under the workspace limit; the results are not counted).")
    if torch_note:
        lines.append(f"The 'vs torch' column is empty because {torch_note}; the truth is numbaconv.reference.")
    return "\n".join(lines)


def plot(rows: list[Row], path: str) -> None:
    """A bar chart: GFLOP/s per layer, one bar per implementation, one panel per pass (needs matplotlib)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    passes = [p for p in PASSES if any(row.pass_name == p for row in rows)]
    layers = list(dict.fromkeys(row.layer for row in rows))
    labels = list(dict.fromkeys(row.implementation for row in rows))
    width = 0.8 / len(labels)
    figure, axes = plt.subplots(len(passes), 1, figsize=(max(8, 1.1 * len(layers) + 3), 3.2 * len(passes)),
                                squeeze=False)
    for axis, pass_name in zip(axes[:, 0], passes):
        for index, label in enumerate(labels):
            speed = {row.layer: row.gflops for row in rows
                     if row.pass_name == pass_name and row.implementation == label and row.correct}
            positions = [i + (index - (len(labels) - 1) / 2) * width for i in range(len(layers))]
            axis.bar(positions, [speed.get(layer, 0.0) for layer in layers], width, label=label)
        axis.set_title(f"{pass_name} pass")
        axis.set_ylabel("GFLOP/s")
        axis.set_xticks(range(len(layers)))
        axis.set_xticklabels(layers, rotation=30, ha="right", fontsize=8)
        axis.grid(axis="y", alpha=0.3)
    axes[0, 0].legend(fontsize=8, ncol=min(len(labels), 4))
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


TRAINING = "training"


@dataclass
class NetworkLayerTimes:
    """One layer of a network as one numbaconv implementation and PyTorch ran it: best ms per pass."""

    layer: str
    count: int
    flops: int                  # one pass, one occurrence
    ms: dict                    # pass -> numbaconv's best ms
    torch_ms: dict              # pass -> PyTorch's best ms on the same device (empty without PyTorch)
    picked: dict                # pass -> the algorithm "auto" ran
    error: float                # the largest relative error of its passes
    correct: bool

    def time(self, which: str, torch: bool = False) -> float:
        """ms of one pass, or of training (every pass the layer runs), NaN when one is missing."""
        times = self.torch_ms if torch else self.ms
        passes = [p for p in PASSES if p in self.ms] if which == TRAINING else [which]
        return sum(times.get(p, math.nan) for p in passes) if passes else math.nan

    def ratio(self, which: str) -> float:
        return self.time(which, torch=True) / self.time(which)


@dataclass
class NetworkSummary:
    """One network, one numbaconv implementation: per layer times and the count-weighted ratios."""

    network: str
    title: str
    implementation: str
    layers: list            # NetworkLayerTimes, in the network's order
    training: bool          # every training pass was run

    @property
    def kinds(self) -> list[str]:
        """What is reported: the passes run, and training when all of them were."""
        run = [p for p in PASSES if any(p in layer.ms for layer in self.layers)]
        return run + ([TRAINING] if self.training else [])

    def total_ms(self, which: str, torch: bool = False) -> float:
        """Sum over the layers of count x ms (``which``: a pass or training)."""
        layers = [layer for layer in self.layers if which == TRAINING or which in layer.ms]
        return sum(layer.count * layer.time(which, torch) for layer in layers) if layers else math.nan

    def ratio(self, which: str) -> float:
        """The count-weighted ratio: sum count x PyTorch ms / sum count x numbaconv ms."""
        return self.total_ms(which, torch=True) / self.total_ms(which)

    def worst(self, which: str):
        """(layer, ratio) of the layer with the lowest ratio, or None without PyTorch's times."""
        ratios = [(layer.layer, layer.ratio(which)) for layer in self.layers
                  if which == TRAINING or which in layer.ms]
        ratios = [item for item in ratios if not math.isnan(item[1])]
        return min(ratios, key=lambda item: item[1]) if ratios else None

    def as_dict(self) -> dict:
        def clean(value):
            return None if isinstance(value, float) and math.isnan(value) else value
        result = {"network": self.network, "title": self.title, "implementation": self.implementation,
                  "convolutions": sum(layer.count for layer in self.layers), "distinct_layers": len(self.layers)}
        for which in self.kinds:
            worst = self.worst(which)
            result[which] = {"ms": clean(self.total_ms(which)), "torch_ms": clean(self.total_ms(which, True)),
                             "ratio": clean(self.ratio(which)),
                             "worst_layer": worst[0] if worst else None,
                             "worst_ratio": clean(worst[1]) if worst else None}
        return result


def network_summaries(rows: list[Row], titles: dict, training: bool) -> list[NetworkSummary]:
    """Per network (``titles``: name -> title, in report order) and numbaconv implementation, its
    layers' times against PyTorch on the same device; ``training``: every pass was run, so training
    (forward + input gradient + weight gradient; no input gradient for a first layer) is reported."""
    summaries = []
    for network, title in titles.items():
        mine = [row for row in rows if row.network == network]
        torch_ms = {(row.device, row.layer, row.pass_name): row.best_ms for row in mine
                    if row.implementation.startswith("torch") and row.correct}
        for label in dict.fromkeys(row.implementation for row in mine if not row.implementation.startswith("torch")):
            layers = {}
            for row in mine:
                if row.implementation != label:
                    continue
                entry = layers.setdefault(row.layer, NetworkLayerTimes(row.layer, row.count, row.flops, {}, {}, {},
                                                                       0.0, True))
                entry.ms[row.pass_name] = row.best_ms if row.correct else math.nan
                if (row.device, row.layer, row.pass_name) in torch_ms:
                    entry.torch_ms[row.pass_name] = torch_ms[row.device, row.layer, row.pass_name]
                entry.picked[row.pass_name] = row.picked
                entry.error = max(entry.error, row.error)
                entry.correct &= row.correct
            summaries.append(NetworkSummary(network, title, label, list(layers.values()), training))
    return summaries


def _number(value: float, digits: int = 2) -> str:
    return "-" if math.isnan(value) else f"{value:.{digits}f}"


def format_network(summary: NetworkSummary) -> str:
    """One network's table: per layer its count, GFLOP (one pass), ms of numbaconv and PyTorch and
    their ratio for inference and training, the ratio of each gradient, the error and auto's picks."""
    kinds = summary.kinds
    timed = [which for which in ("forward", TRAINING) if which in kinds]
    ratios_only = [which for which in ("input", "weight") if which in kinds]
    head = f"{'layer':<30}{'n':>3}{'GFLOP':>8}"
    for which in timed:
        name = "inference" if which == "forward" else which
        head += f"{name + ' ms':>14}{'torch':>9}{'ratio':>7}"
    head += "".join(f"{which:>8}" for which in ratios_only)
    head += f"{'rel err':>9}  auto: " + "/".join(p[0] for p in PASSES if p in kinds)
    lines = [f"{summary.title}: {sum(layer.count for layer in summary.layers)} convolutions, "
             f"{len(summary.layers)} distinct; {summary.implementation} against PyTorch (ratio = PyTorch ms / "
             f"numbaconv ms; input, weight: the ratio of that gradient)", head, "-" * len(head)]
    for layer in summary.layers:
        line = f"{layer.layer:<30}{layer.count:>3}{layer.flops / 1e9:>8.3f}"
        for which in timed:
            line += (f"{_number(layer.time(which), 3):>14}{_number(layer.time(which, True), 3):>9}"
                     f"{_number(layer.ratio(which)):>7}")
        # "-": not run (the first layer's input gradient) or no PyTorch to compare with
        line += "".join(f"{_number(layer.ratio(which)) if which in layer.ms else '-':>8}" for which in ratios_only)
        picks = "/".join(layer.picked.get(p, "") or "-" for p in PASSES if p in kinds)
        error = f"{layer.error:>9.1e}" if layer.correct else f"{'MISMATCH':>9}"
        lines.append(f"{line}{error}  {picks}")
    total = f"{'count-weighted':<30}{sum(layer.count for layer in summary.layers):>3}" \
            f"{sum(layer.count * layer.flops for layer in summary.layers) / 1e9:>8.2f}"
    for which in timed:
        total += (f"{_number(summary.total_ms(which), 3):>14}{_number(summary.total_ms(which, True), 3):>9}"
                  f"{_number(summary.ratio(which)):>7}")
    total += "".join(f"{_number(summary.ratio(which)):>8}" for which in ratios_only)
    lines += ["-" * len(head), total]
    return "\n".join(lines)


def format_network_summaries(summaries: list[NetworkSummary]) -> str:
    """The networks side by side: count-weighted ratios for inference (the forward) and training,
    and the worst layer of each pass."""
    lines = ["ratio = sum over a network's layers of count x PyTorch time / sum of count x numbaconv time "
             "(above 1: numbaconv faster); inference = forward; training = forward + input gradient + "
             "weight gradient (no input gradient for a network's first layer)"]
    head = f"{'network':<19}{'implementation':<16}{'convs':>7}{'inference':>11}{'training':>10}  worst layer per pass"
    lines += [head, "-" * len(head)]
    for summary in summaries:
        kinds = summary.kinds
        worst = []
        for which in kinds:
            found = summary.worst(which)
            if found:
                worst.append(f"{which} {found[0]} {found[1]:.2f}")
        convs = f"{sum(layer.count for layer in summary.layers)}/{len(summary.layers)}"
        inference = summary.ratio("forward") if "forward" in kinds else math.nan
        training = summary.ratio(TRAINING) if TRAINING in kinds else math.nan
        lines.append(f"{summary.network:<19}{summary.implementation:<16}{convs:>7}{_number(inference):>11}"
                     f"{_number(training):>10}  {'; '.join(worst) or '-'}")
    lines.append("convs = convolutions / distinct layers timed. numbaconv's count-weighted ms per network: "
                 + "; ".join(f"{s.network} " + ", ".join(f"{which} {_number(s.total_ms(which), 1)}"
                                                         for which in s.kinds if which in ("forward", TRAINING))
                             for s in summaries))
    return "\n".join(lines)


def plot_network(summary: NetworkSummary, path: str) -> None:
    """One network's chart (needs matplotlib): per layer, count x ms of numbaconv and of PyTorch as
    bars and their ratio as a line on the right axis; one panel for inference, one for training."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [which for which in ("forward", TRAINING) if which in summary.kinds]
    names = [layer.layer for layer in summary.layers]
    width = 0.4
    figure, axes = plt.subplots(len(panels), 1, figsize=(max(8, 0.45 * len(names) + 3), 3.6 * len(panels)),
                                squeeze=False)
    for axis, which in zip(axes[:, 0], panels):
        layers = [layer for layer in summary.layers if which == TRAINING or which in layer.ms]
        positions = range(len(layers))
        for offset, (label, torch) in ((-width / 2, (summary.implementation, False)), (width / 2, ("PyTorch", True))):
            heights = [layer.count * layer.time(which, torch) for layer in layers]
            axis.bar([i + offset for i in positions], [0.0 if math.isnan(h) else h for h in heights], width,
                     label=label)
        axis.set_ylabel("count x ms")
        axis.set_xticks(list(positions))
        axis.set_xticklabels([layer.layer + (f" x{layer.count}" if layer.count > 1 else "") for layer in layers],
                             rotation=30, ha="right", fontsize=8)
        axis.grid(axis="y", alpha=0.3)
        name = "inference" if which == "forward" else "training"
        axis.set_title(f"{summary.title}: {name}, count-weighted ratio {_number(summary.ratio(which))}")
        ratios = [layer.ratio(which) for layer in layers]
        if any(not math.isnan(r) for r in ratios):
            right = axis.twinx()
            right.plot(list(positions), ratios, "o-", color="black", linewidth=1, markersize=3,
                       label="ratio (PyTorch ms / numbaconv ms)")
            right.axhline(1.0, color="grey", linestyle="--", linewidth=0.8)
            right.set_ylabel("ratio")
            right.set_ylim(bottom=0)
            right.legend(fontsize=8, loc="upper right")
        axis.legend(fontsize=8, loc="upper left")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
