"""What ``numbaconv bench`` reports: one Row per (layer, pass, implementation), as a table, as
JSON-ready values, and as a bar chart."""
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
