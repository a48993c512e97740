"""What numbaconv.torch adds to a convolution call: µs per call against numbaconv on NumPy arrays.

One 14x14 layer at batch 4 (64 -> 64 channels, 3x3, padding 1, float32, with
bias) run several ways, taking turns (numbaconv.timing.best_times, best of the
rounds, half of them in reverse order; each block of calls comes after the
call ran untimed for a moment, so that no runtime's threads still spin from
the one before; glibc's malloc keeps freed memory, as in ``numbaconv bench``): ``numbaconv.torch.Conv2d`` on
a tensor, ``numbaconv.conv2d`` on the same data as NumPy arrays (the kernels
alone: the floor of the layer) and ``torch.nn.Conv2d``. The overhead is the
layer's time minus the NumPy call's. Printed for the forward (parameters
requiring grad, as in training), the forward under ``torch.no_grad()``,
forward and backward together (``numbaconv.conv2d_backward`` as the NumPy
floor's backward) and the forward of a channels_last input (the copies in and
out that layout costs).

``--compare FILE`` times a second copy of numbaconv/torch.py as well (say an
earlier revision's: ``git show REV:numbaconv/torch.py > /tmp/before.py``),
loaded beside this one as ``numbaconv._torch_compared`` and taking turns with
it in the same process, which is steadier on a busy machine than two runs.
The copy must not register torch.library operators of the same names.

    python bench/torch_overhead.py [--rounds 200] [--number 20] [--compare FILE]

Needs PyTorch.
"""
import argparse
import importlib.util
import sys

import torch

import numbaconv as nc
import numbaconv.torch as nct
from numbaconv import timing
from numbaconv.tools.bench import SETTLE_S, keep_freed_memory

BATCH, CHANNELS, SIZE = 4, 64, 14


def load_copy(path):
    """Another copy of numbaconv/torch.py as the module numbaconv._torch_compared, on this numbaconv."""
    spec = importlib.util.spec_from_file_location("numbaconv._torch_compared", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def cases(layer_modules):
    """{case: {who: call}}: each case's calls, one per module in ``layer_modules`` ({who: module}),
    the NumPy floor under "numpy" and torch.nn under "torch.nn"."""
    torch.manual_seed(0)
    reference = torch.nn.Conv2d(CHANNELS, CHANNELS, 3, padding=1)
    layers = {}
    for who, module in layer_modules.items():
        layers[who] = module.Conv2d(CHANNELS, CHANNELS, 3, padding=1)
        layers[who].load_state_dict(reference.state_dict())
    x = torch.randn(BATCH, CHANNELS, SIZE, SIZE)
    grad_y = torch.randn(BATCH, CHANNELS, SIZE, SIZE)
    x_np, w_np, b_np, grad_y_np = (t.detach().numpy() for t in (x, reference.weight, reference.bias, grad_y))
    # the layers' own spelling of the options, so every call meets one ConvSpec in numbaconv's caches
    options = (reference.stride, reference.padding, reference.dilation, reference.groups)
    x_grad = x.clone().requires_grad_()
    x_last = x.contiguous(memory_format=torch.channels_last)

    def no_grad(layer):
        def call():
            with torch.no_grad():
                return layer(x)
        return call

    def each(make_call):
        """make_call(layer) for the layers of numbaconv.torch and for torch.nn."""
        return {**{who: make_call(layer) for who, layer in layers.items()}, "torch.nn": make_call(reference)}

    forward = {"numpy": lambda: nc.conv2d(x_np, w_np, b_np, *options)}
    return {
        "forward": {**forward, **each(lambda layer: lambda: layer(x))},
        "forward, no_grad": {**forward, **each(no_grad)},
        "forward + backward": {"numpy": lambda: (nc.conv2d(x_np, w_np, b_np, *options),
                                                 nc.conv2d_backward(grad_y_np, x_np, w_np, *options)),
                               **each(lambda layer: lambda: layer(x_grad).backward(grad_y))},
        "forward, channels_last": {**forward, **each(lambda layer: lambda: layer(x_last))},
    }


def best_in_both_orders(calls, rounds, number):
    """{who: best seconds per call}: half the rounds in the given order, half in the reverse one,
    since the call that opens a round measures a little faster (about 15 µs here, identical calls)."""
    order = list(calls)
    forward, backward = (dict(zip(names, timing.best_times([calls[who] for who in names], rounds=rounds // 2,
                                                           settle_s=SETTLE_S, number=number)))
                         for names in (order, order[::-1]))
    return {who: min(forward[who], backward[who]) for who in order}


def main(rounds, number, compare):
    layer_modules = {"numbaconv.torch": nct}
    if compare:
        layer_modules["compared"] = load_copy(compare)
    print(f"{BATCH}x{CHANNELS}x{SIZE}x{SIZE} float32, {CHANNELS} -> {CHANNELS} 3x3 padding 1, bias; "
          f"torch threads {torch.get_num_threads()}; µs per call, best of {rounds} rounds of {number} calls; "
          f"overhead: minus numbaconv on NumPy arrays")
    columns = [*layer_modules, "numpy", "torch.nn"]
    print(f"{'case':24s}" + "".join(f"{who:>17s}" for who in columns)
          + "".join(f"{'overhead ' + ('' if who == 'numbaconv.torch' else who):>18s}" for who in layer_modules))
    every_case = cases(layer_modules)
    for calls in every_case.values():      # compiled kernels loaded, scratch allocated, before any timing
        for call in calls.values():
            call()
    for case, calls in every_case.items():
        micros = {who: seconds * 1e6 for who, seconds in best_in_both_orders(calls, rounds, number).items()}
        print(f"{case:24s}" + "".join(f"{micros[who]:17.1f}" for who in columns)
              + "".join(f"{micros[who] - micros['numpy']:+18.1f}" for who in layer_modules))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=200, help="timed rounds, the calls taking turns")
    parser.add_argument("--number", type=int, default=20, help="calls per timed block")
    parser.add_argument("--compare", metavar="FILE", help="another copy of numbaconv/torch.py to time beside this one")
    arguments = parser.parse_args()
    print(keep_freed_memory())   # as numbaconv bench does: no page faults on each result's memory
    main(arguments.rounds, arguments.number, arguments.compare)
