"""The ``numbaconv`` command: ``info``, ``bench``, ``verify``, ``tune``, ``compile`` and ``compile-time``.

Exit codes: 0 success; 1 a result missed its tolerance; 2 bad arguments
(one line on stderr, no traceback).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
import warnings
from concurrent.futures.process import BrokenProcessPool

import numba
import numpy as np

from .. import dispatch, functional
from ..accuracy import TOLERANCE
from ..compile_cache import COMPILE_LISTENERS, CompilingNotice, cache_folder
from ..cpu.threads import thread_count
from ..devices import available_devices, cpu_model, cuda_simulated
from ..passes import PASSES
from ..tuning import plan_cache, tune
from ..version import __version__
from . import bench, compiletime, networks, precompile, report, suite
from .verify import verify


# Seconds of timing per layer and pass in the networks suite (the layer suites: 0.3 quick, 1.0
# full). Every (layer, pass) gets at least --repeats rounds, so the big layers run past it; the
# small ones get more rounds of their noisy few milliseconds. The five networks take about five
# minutes on 2 cores with it (README, `numbaconv bench --suite networks`).
NETWORKS_BUDGET_S = 0.5


class _Parser(argparse.ArgumentParser):
    """argparse that reports a bad argument as one line and exit code 2."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _split(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


def _parser() -> _Parser:
    parser = _Parser(prog="numbaconv", description="numbaconv: convolution kernels compiled by Numba.")
    commands = parser.add_subparsers(dest="command", metavar="{info,bench,verify,tune,compile,compile-time}", parser_class=_Parser)
    info = commands.add_parser("info", help="versions, devices, threads, CPU and GPU, compile cache")
    info.set_defaults(handler=_info, subparser=info)

    run = commands.add_parser("bench", help="time every algorithm against PyTorch on a layer suite")
    run.add_argument("--suite", choices=tuple(suite.SUITES) + ("networks",), default="quick",
                     help="quick (default: a subset of the layers, algo auto; under 2 minutes), "
                          "full (every layer but the large kernels, every algorithm), large_kernels (long 1-d "
                          "filters, wav2vec 2.0's positional convolution, 31x31 depthwise, 15x15 and 9x9x9 "
                          "kernels: the FFT's layers) or networks (every layer of "
                          f"{', '.join(networks.NETWORKS)}, and the extra depthwise_grouped layers, algo auto; "
                          "about 10 minutes on 2 cores)")
    run.add_argument("--layer", default=None,
                     help=f"comma-separated layer names instead of a suite: {', '.join(suite.LAYERS)}")
    run.add_argument("--network", default=None,
                     help="comma-separated networks of the networks suite instead of all: "
                          f"{', '.join(networks.SUITE)}")
    run.add_argument("--batch", type=int, default=None,
                     help="run the networks at this batch size instead of their own (N=1 for a quick look)")
    run.add_argument("--device", default="all",
                     help="cpu, cuda or all (default: every available device; not Numba's CUDA simulator)")
    run.add_argument("--algo", default=None,
                     help="comma-separated numbaconv algorithms, 'auto' included, or all "
                          "(default: auto for the quick suite, all for the full one)")
    run.add_argument("--pass", dest="passes", default="all",
                     help=f"comma-separated passes from {', '.join(PASSES)}, or all (default)")
    run.add_argument("--dtype", choices=suite.DTYPES, default="float32")
    run.add_argument("--repeats", type=int, default=3, help="timed calls at least, per implementation")
    run.add_argument("--budget", type=float, default=None,
                     help="seconds of timing per layer and pass (default 0.3 quick, 1.0 full, "
                          f"{NETWORKS_BUDGET_S} networks)")
    run.add_argument("--without-torch", action="store_true", help="do not compare with PyTorch")
    run.add_argument("--default-malloc", action="store_true",
                     help="leave glibc's malloc settings as they are (freed memory goes back to the system, "
                          "so calls may pay page faults, depending on what ran before)")
    run.add_argument("--json", default=None, metavar="FILE", help="write the rows and the machine as JSON")
    run.add_argument("--plot", default=None, metavar="FILE.png",
                     help="bar chart of GFLOP/s (needs matplotlib); for networks one chart per network, "
                          "FILE-<network>.png when there are several")
    run.set_defaults(handler=_bench, subparser=run)

    check = commands.add_parser("verify", help="every algorithm and pass against the float64 reference")
    check.add_argument("--device", default="all", help="cpu, cuda or all (default: every available device)")
    check.add_argument("--algo", default="all", help="comma-separated algorithms, or all (default)")
    check.add_argument("--seed", type=int, default=0, help="seed of the random problems")
    check.add_argument("--draws", type=int, default=3, help="random problems per argument combination")
    check.set_defaults(handler=_verify, subparser=check)

    plan = commands.add_parser("tune", help="time the algorithms on bench layers and remember the winners")
    plan.add_argument("--layer", default=",".join(suite.SUITES["quick"]),
                      help=f"comma-separated layer names (default: the quick suite): {', '.join(suite.LAYERS)}")
    plan.add_argument("--pass", dest="passes", default="all",
                      help=f"comma-separated passes from {', '.join(PASSES)}, or all (default)")
    plan.add_argument("--dtype", choices=suite.DTYPES, default="float32")
    plan.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    plan.set_defaults(handler=_tune, subparser=plan)

    warm = _kernel_options(commands.add_parser(
        "compile", help="compile every CPU kernel into Numba's cache now, in parallel processes"))
    warm.add_argument("--device", default="cpu", help="cpu (the only device whose kernels Numba caches on disk)")
    warm.add_argument("--jobs", type=int, default=None, help="worker processes (default: one per core)")
    warm.set_defaults(handler=_compile, subparser=warm)

    compile_time = _kernel_options(commands.add_parser(
        "compile-time", help="cold compile time of the CPU engine and first-call times on a warm cache"))
    compile_time.add_argument("--json", default=None, metavar="FILE", help="write the numbers as JSON")
    compile_time.set_defaults(handler=_compile_time, subparser=compile_time)
    return parser


def _kernel_options(command):
    """``command`` with the --algo, --pass and --dtype options of the compile commands."""
    command.add_argument("--algo", default="all", help="comma-separated CPU algorithms, or all (default)")
    command.add_argument("--pass", dest="passes", default="all",
                         help=f"comma-separated passes from {', '.join(PASSES)}, or all (default)")
    command.add_argument("--dtype", default="all", help="float32, float64 or all (default)")
    return command


def _choices(parser, what: str, text: str, allowed) -> list[str]:
    """The comma-separated names of ``text`` ("all": every one of ``allowed``), each checked."""
    if text == "all":
        return list(allowed)
    names = _split(text)
    for name in names:
        if name not in allowed:
            parser.error(f"unknown {what} {name!r}; choose from {', '.join(allowed)} or all")
    return names


def _devices(parser, text: str, everything) -> tuple[str, ...]:
    """The devices ``--device`` names; "all" means ``everything()``."""
    if text == "all":
        return everything()
    devices = _split(text)
    for device in devices:
        if device not in ("cpu", "cuda"):
            parser.error(f"unknown device {device!r}; choose cpu, cuda or all")
        if device not in available_devices():
            parser.error(f"device {device!r} is not available here: numbaconv found no usable GPU "
                         f"(available: {', '.join(available_devices())})")
    return tuple(devices)


def _algos(parser, text: str, devices, allowed) -> list[str] | None:
    if text == "all":
        return None
    algos = _split(text)
    known = sorted({name for device in devices for name in allowed(device)})
    for algo in algos:
        if algo not in known:
            parser.error(f"unknown algorithm {algo!r} on {', '.join(devices)}; choose from {', '.join(known)} or all")
    return algos


def kernel_cache_folder() -> str:
    """The folder of the CPU kernels' machine code (every CPU algorithm module lives in
    numbaconv/cpu/, one folder)."""
    return cache_folder(dispatch.registry("cpu")["direct"].forward)


def machine() -> dict:
    """What the numbers were taken on: versions, devices, threads, CPU, GPU, compile cache."""
    # The threading layer is chosen on the first parallel call, so make one.
    functional.conv1d(np.ones((1, 1, 4)), np.ones((1, 1, 2)), algo="direct", device="cpu")
    torch = bench.import_torch()
    devices = available_devices()
    gpu = "none found"
    if "cuda" in devices:
        from numba import cuda
        gpu = "Numba's CUDA simulator" if cuda_simulated() else str(cuda.get_current_device().name)
    return {
        "numbaconv": __version__, "numba": numba.__version__, "numpy": np.__version__,
        "torch": torch.__version__ if torch else "not installed",
        "python": platform.python_version(),
        "devices": ", ".join(devices),
        "algorithms": "; ".join(f"{d}: {', '.join(dispatch.algorithms(d))}" for d in devices),
        "numba threading layer": numba.threading_layer(),
        "numba threads": numba.get_num_threads(),
        "numbaconv GEMM threads": thread_count(),
        "cpu": cpu_model(), "cpu cores": os.cpu_count(),
        "gpu": gpu,
        "compile cache": kernel_cache_folder(),
    }


def _info(parser, args) -> int:
    for key, value in machine().items():
        print(f"{key + ':':<24}{value}")
    return 0


class _ProgressBar:
    """A one-line progress bar on stderr where stderr is a terminal (nothing elsewhere): steps done
    of ``total`` (None: not known yet) and what runs now; while numbaconv compiles a kernel it
    names the kernel (numbaconv.compile_cache.COMPILE_LISTENERS), and the one-line compile
    notice, which the bar replaces, stays quiet."""

    def __init__(self, total=None):
        self.total, self.index, self.text = total, 0, ""
        self.live = sys.stderr.isatty()
        self._quiet = warnings.catch_warnings()

    def __enter__(self):
        if self.live:
            COMPILE_LISTENERS.append(self._compiling)
            self._quiet.__enter__()
            warnings.simplefilter("ignore", CompilingNotice)
        return self

    def __exit__(self, *error):
        if self.live:
            COMPILE_LISTENERS.remove(self._compiling)
            self._quiet.__exit__(*error)
            sys.stderr.write("\n")

    def show(self, index: int, text: str, total=None) -> None:
        self.index, self.text, self.total = index, text, total if total is not None else self.total
        self._draw(text)

    def say(self, text: str) -> None:
        """Print ``text`` on stdout under the bar's line, then draw the bar again."""
        if self.live:
            sys.stderr.write("\r" + " " * 110 + "\r")
            sys.stderr.flush()
        print(text, flush=True)
        self._draw(self.text)

    def _compiling(self, kernel: str) -> None:
        self._draw(f"{self.text}: compiling {kernel}")

    def _draw(self, text: str) -> None:
        if not self.live:
            return
        if self.total:
            filled = int(30 * self.index / self.total)
            counts = f"[{'#' * filled}{'.' * (30 - filled)}] {self.index}/{self.total} "
        else:
            counts = ""
        sys.stderr.write(f"\r{counts}{text[:70]:<70}")
        sys.stderr.flush()


def _bench(parser, args) -> int:
    chosen_networks = None
    if args.network or (args.suite == "networks" and not args.layer):
        if args.layer:
            parser.error("--layer and --network cannot be combined")
        chosen_networks = [networks.SUITE[name] for name in
                           _choices(parser, "network", args.network or "all", tuple(networks.SUITE))]
        if args.batch is not None:
            if args.batch < 1:
                parser.error(f"--batch must be at least 1, got {args.batch}")
            chosen_networks = [network.at_batch(args.batch) for network in chosen_networks]
    elif args.batch is not None:
        parser.error("--batch applies to the networks suite (--suite networks or --network) only")
    names = _split(args.layer) if args.layer else list(suite.SUITES.get(args.suite, ()))
    for name in names:
        if name not in suite.LAYERS:
            parser.error(f"unknown layer {name!r}; choose from {', '.join(suite.LAYERS)}")
    passes = _choices(parser, "pass", args.passes, PASSES)
    devices = _devices(parser, args.device, bench.timed_devices)
    auto_only = chosen_networks is not None or (args.suite == "quick" and not args.layer)
    algos = _algos(parser, args.algo or ("auto" if auto_only else "all"), devices, bench.algorithm_choices)
    if args.repeats < 1:
        parser.error(f"--repeats must be at least 1, got {args.repeats}")
    if args.plot:
        try:
            import matplotlib  # noqa: F401  (only checked here; report.plot imports it)
        except ImportError:
            parser.error("--plot needs matplotlib: pip install matplotlib (or the package's 'bench' extra)")
    budget = args.budget
    if budget is None:
        budget = NETWORKS_BUDGET_S if chosen_networks is not None else (0.3 if args.suite == "quick" else 1.0)
    with _ProgressBar() as bar:
        # a first line at once, in logs too: importing PyTorch and the machine's details take seconds
        bar.say(f"numbaconv {__version__}, numba {numba.__version__}, numpy {np.__version__}; {cpu_model()} "
                f"({os.cpu_count()} cores)")
        bar.show(0, "importing PyTorch")
        torch = None if args.without_torch else bench.import_torch()
        bar.show(0, "machine and versions")
        info = machine()
        bar.say(f"torch {info['torch']}, gpu: {info['gpu']}")
        bar.say("malloc left as it is (--default-malloc)" if args.default_malloc else bench.keep_freed_memory())
        bar.show(0, "the CPU's practical peak")
        peak = bench.cpu_peak_gflops()
        bar.say(f"practical CPU peak (float32 2048^3 NumPy matmul): {peak:.1f} GFLOP/s; dtype {args.dtype}")
        if chosen_networks is None:
            bar.say("\n".join(f"  {layer.name:<18}{layer.describe()}" for layer in (suite.LAYERS[name] for name in names)))
            steps = [(suite.LAYERS[name], pass_name, "", 1) for name in names for pass_name in passes]
        else:
            steps = _network_steps(chosen_networks, passes, bar.say)
        bar.say("")

        candidates = bench.implementations(devices, algos, torch, with_reference=chosen_networks is None)
        rows, started = [], time.perf_counter()
        problem, compiled = None, []
        listener = compiled.append
        COMPILE_LISTENERS.append(listener)
        try:
            for index, (layer, pass_name, network, count) in enumerate(steps):
                bar.show(index, f"{network + ' ' if network else ''}{layer.name} {pass_name}", total=len(steps))
                if problem is None or problem.layer is not layer:
                    problem = suite.Problem.create(layer, args.dtype)
                taking_part = [c for c in candidates if bench.runs(c, layer)]
                for row in bench.compare(problem, pass_name, taking_part, torch, peak_gflops=peak,
                                         min_repeats=args.repeats, budget_s=budget):
                    row.network, row.count = network, count
                    rows.append(row)
                if index == 0 and compiled:
                    _compile_ahead(steps[1:], candidates, args.dtype, bar)
        finally:
            COMPILE_LISTENERS.remove(listener)
        problem = None
        bar.show(len(steps), "done")

    torch_note = None
    if torch is None:
        torch_note = ("it was left out (--without-torch)" if args.without_torch
                      else "PyTorch is not installed (pip install torch)")
    summaries = []
    if chosen_networks is None:
        print(report.format_table(rows, torch_note))
    else:
        summaries = _report_networks(rows, chosen_networks, passes, torch_note)
    warm_up = sum(max(row.first_ms - row.best_ms, 0.0) for row in rows
                  if row.correct and not row.implementation.startswith("torch")) / 1e3
    print(f"warm-up beyond steady state (compilation when the cache is cold, first-call costs): {warm_up:.1f} s; "
          f"whole run {time.perf_counter() - started:.1f} s")
    if args.json:
        with open(args.json, "w") as out:
            json.dump({"machine": info, "peak_gflops": peak, "dtype": args.dtype,
                       "rows": [row.as_dict() for row in rows],
                       **({"networks": [s.as_dict() for s in summaries]} if chosen_networks is not None else {})},
                      out, indent=1)
        print(f"rows written to {args.json}")
    if args.plot and chosen_networks is None:
        report.plot(rows, args.plot)
        print(f"plot written to {args.plot}")
    elif args.plot:
        for summary, path in zip(summaries, _plot_paths(args.plot, summaries)):
            report.plot_network(summary, path)
            print(f"plot of {summary.network} ({summary.implementation}) written to {path}")
    mismatches = [row for row in rows if not row.correct]
    if mismatches:
        print(f"{len(mismatches)} result(s) missed the tolerance: "
              + ", ".join(f"{r.network + ' ' if r.network else ''}{r.layer} {r.pass_name} {r.implementation}"
                          for r in mismatches))
        return 1
    return 0


def _network_steps(chosen, passes, say) -> list[tuple]:
    """``say`` each network's layers; return its (layer, pass, network, count) steps, the passes
    each layer runs in training (no input gradient for a first layer) among ``passes``."""
    steps = []
    for network in chosen:
        say(f"{network.name}: {network.title}, {network.convolutions} convolutions, "
            f"{len(network.layers)} distinct (count, layer):")
        for entry in network.layers:
            note = "" if entry.input_grad else "; no input gradient (the first layer)"
            say(f"  {entry.count:>3} {entry.layer.name:<30}{entry.layer.describe()}{note}")
            steps += [(entry.layer, pass_name, network.name, entry.count)
                      for pass_name in passes if pass_name in entry.passes]
    return steps


def _report_networks(rows, chosen, passes, torch_note) -> list:
    """Print each network's table and the summary of all; return the summaries."""
    summaries = report.network_summaries(rows, {n.name: n.title for n in chosen}, training=set(passes) == set(PASSES))
    for summary in summaries:
        print(report.format_network(summary))
        print()
    print(report.format_network_summaries(summaries))
    if torch_note:
        print(f"No ratios: {torch_note}; the truth is numbaconv.reference.")
    return summaries


def _plot_paths(path: str, summaries) -> list[str]:
    """FILE.png for one chart; FILE-<network>.png (and -<implementation> where a network has
    several) for more."""
    if len(summaries) == 1:
        return [path]
    stem, dot, extension = path.rpartition(".")
    stem, extension = (stem, dot + extension) if dot and "/" not in extension else (path, ".png")
    several = len({s.network for s in summaries}) < len(summaries)
    return [f"{stem}-{s.network}" + (f"-{s.implementation.replace('/', '-')}" if several else "") + extension
            for s in summaries]


def _verify(parser, args) -> int:
    devices = _devices(parser, args.device, available_devices)
    algos = _algos(parser, args.algo, devices, dispatch.algorithms)
    started = time.perf_counter()
    if args.draws < 1:
        parser.error(f"--draws must be at least 1, got {args.draws}")
    with _ProgressBar() as bar:
        tallies = verify(devices, args.seed, algos, args.draws,
                         progress=lambda done, total, text: bar.show(done, text, total))
    print(f"{'device/algorithm':<20}{'pass':<9}{'checked':>8}{'declined':>9}"
          f"{'max err f32':>13}{'max err f64':>13}  status")
    failed = False
    for (device, algo, pass_name), tally in tallies.items():
        status = "ok" if not tally.failures else f"{len(tally.failures)} MISMATCH"
        failed |= bool(tally.failures)
        print(f"{device + '/' + algo:<20}{pass_name:<9}{tally.checked:>8}{tally.declined:>9}"
              f"{tally.max_error['float32']:>13.1e}{tally.max_error['float64']:>13.1e}  {status}")
    for tally in tallies.values():
        for failure in tally.failures:
            print("MISMATCH", failure)
    print(f"tolerance (||result - reference|| / ||reference||): float32 {TOLERANCE['float32']:.0e}, "
          f"float64 {TOLERANCE['float64']:.0e}; {time.perf_counter() - started:.1f} s")
    return 1 if failed else 0


def _tune(parser, args) -> int:
    layers = [suite.LAYERS[name] for name in _choices(parser, "layer", args.layer, tuple(suite.LAYERS))]
    passes = _choices(parser, "pass", args.passes, PASSES)
    device = _devices(parser, args.device, lambda: ("cpu",))[0]
    print(f"{'layer':<18}{'pass':<9}{'winner':<10}  best ms of each algorithm")
    for layer in layers:
        problem = {"x_shape": layer.spec.x_shape, "w_shape": layer.spec.w_shape, "dtype": args.dtype,
                   **layer.arguments}
        for result in tune([problem], device=device, passes=passes):
            times = ", ".join(f"{name} {ms:.3f}" for name, ms in sorted(result["ms"].items(), key=lambda item: item[1]))
            print(f"{layer.name:<18}{result['pass']:<9}{result['algo']:<10}  {times}")
    print(f"plans kept in {plan_cache().path} (algo=\"tune\" uses them)")
    return 0


def _compile_ahead(steps, candidates, dtype: str, bar) -> None:
    """On a cold cache (the first step compiled kernels), the CPU kernels of the other steps'
    numbaconv calls compiled in one worker process per core (precompile.compile_calls) before
    any of them is timed, rather than one after another in this process; nothing runs beside
    the timings."""
    workers = os.cpu_count() or 1
    numbaconv_cpu = [c for c in candidates if c.label.startswith("cpu/") and c.label not in ("cpu/reference",
                                                                                             "cpu/tune")]
    calls = [(layer, pass_name, c.label.partition("/")[2], dtype) for layer, pass_name, _, _ in steps
             for c in numbaconv_cpu if bench.runs(c, layer)]
    if workers > 1 and calls:
        bar.show(1, f"compiling the other layers' kernels in {workers} processes")
        try:
            precompile.compile_calls(calls, workers)
        except (OSError, BrokenProcessPool) as error:   # no worker processes where this runs
            bar.say(f"compiling in worker processes failed ({error}); each layer compiles as it comes")


def _compile(parser, args) -> int:
    if args.device != "cpu":
        parser.error(f"--device {args.device}: only the CPU kernels are cached on disk (Numba compiles CUDA "
                     f"kernels in each process)")
    if args.jobs is not None and args.jobs < 1:
        parser.error(f"--jobs must be at least 1, got {args.jobs}")
    algos = _choices(parser, "algorithm", args.algo, dispatch.algorithms("cpu"))
    passes = _choices(parser, "pass", args.passes, PASSES)
    dtypes = _choices(parser, "dtype", args.dtype, precompile.DTYPES)
    print(f"compiling {len(algos)} algorithm(s) x {len(passes)} pass(es) x {len(dtypes)} dtype(s) into "
          f"{kernel_cache_folder()}", flush=True)
    with _ProgressBar(total=len(algos) * len(dtypes)) as bar:
        bar.show(0, "starting the worker processes")

        def progress(done, total, text):
            if bar.live:
                bar.show(done, text)
            else:   # a line per task in logs
                print(f"[{done}/{total}] {text}", flush=True)
        seconds = precompile.compile_all(algos, passes, dtypes, args.jobs, progress=progress)
    print(f"done in {seconds:.1f} s; later processes on this machine load the kernels from the cache")
    return 0


def _compile_time(parser, args) -> int:
    algos = _choices(parser, "algorithm", args.algo, dispatch.algorithms("cpu"))
    passes = _choices(parser, "pass", args.passes, PASSES)
    dtypes = _choices(parser, "dtype", args.dtype, suite.DTYPES)
    with _ProgressBar() as bar:
        result = compiletime.compile_times(algos, passes, dtypes, progress=lambda done, total, text: bar.show(
            done, text, total))
    print(compiletime.format_report(result))
    if args.json:
        with open(args.json, "w") as out:
            json.dump({"machine": machine(), **result}, out, indent=1)
        print(f"numbers written to {args.json}")
    return 0


def main(argv=None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    return args.handler(args.subparser, args)


if __name__ == "__main__":
    sys.exit(main())
