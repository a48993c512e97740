"""Long CPU passes run in slices, so that Ctrl-C is heard within about a second.

Python raises ``KeyboardInterrupt`` only between bytecodes, never inside a
compiled kernel, so one long kernel call cannot be stopped. A pass that
exceeds its algorithm's ``SLICE_FLOPS`` (the work it does in about a quarter
of a second at its slowest on dense layers, docs/decisions.md) or touches
more than ``SLICE_BYTES`` of activations (memory-bound passes, such as a
large depthwise layer) runs instead as a sequence of smaller problems, each
an ordinary call of the same kernel on views of the operands, and Python
regains control between them:

- a block of samples (forward and input gradient write disjoint parts of
  the result; the weight gradient adds the blocks' gradients in float64);
- where one sample alone is too much, one sample in blocks of channels:
  output channels for the forward and the weight gradient, input channels
  for the input gradient (with ``groups > 1``: blocks of whole groups).

Every slice's operands are contiguous views except the input gradient's
weight columns (``w[:, c0:c1]``, copied: the weight is small). Smaller
calls, every layer of the bench suites among them, run as one call.
"""
import dataclasses

import numpy as np

from .algorithm import PASS_FUNCTIONS, read_only

SLICE_BYTES = 128 * 2**20     # input and output of one slice: a quarter second even at 1 GB/s


def run(module, pass_name, spec, a, b, out):
    """``module``'s pass on ``spec`` (3-d): ``forward(spec, x, w, y)``,
    ``backward_input(spec, grad_y, w, grad_x)`` or ``backward_weight(spec, x, grad_y, grad_w)``
    (``a``, ``b``, ``out`` in that order), in slices when it exceeds ``module.SLICE_FLOPS``;
    ``a`` and ``b`` reach it read-only (numbaconv.algorithm, rule 2). Returns whether every
    element of ``out`` is finite where the calls said so (numbaconv.algorithm), else None."""
    method = getattr(module, PASS_FUNCTIONS[pass_name])
    a, b = read_only(a), read_only(b)
    budget = getattr(module, "SLICE_FLOPS", None)
    activations = a.nbytes + (b if pass_name == "weight" else out).nbytes   # x and y, whichever pass
    if budget is None or spec.batch == 0 or (spec.flops <= budget and activations <= SLICE_BYTES):
        return method(spec, a, b, out)
    flops, nbytes = spec.flops // spec.batch, activations // spec.batch
    samples = max(1, min(budget // flops, SLICE_BYTES // nbytes))   # 1 when one sample is too much
    blocks = max(-(-flops // budget), -(-nbytes // SLICE_BYTES))    # channel blocks of one sample
    total, part = (np.zeros(out.shape, np.float64), np.empty_like(out)) if pass_name == "weight" else (None, None)
    said = []   # what the calls said of their parts of out
    for first in range(0, spec.batch, samples):
        stop = min(spec.batch, first + samples)
        if blocks > 1:
            said += _channel_blocks(method, pass_name, spec, a, b, out if total is None else part, first, blocks)
        elif total is None:
            said.append(method(dataclasses.replace(spec, batch=stop - first), a[first:stop], b, out[first:stop]))
        else:
            method(dataclasses.replace(spec, batch=stop - first), a[first:stop], b[first:stop], part)
        if total is not None:
            total += part
    if total is not None:
        out[...] = total
        return None   # a sum of parts: their finiteness says nothing of it
    return None if None in said else all(said)


def _channel_blocks(method, pass_name, spec, a, b, out, sample, wanted):
    """One sample's pass in about ``wanted`` blocks of channels (or of groups); what each call
    returned, in a list."""
    n = slice(sample, sample + 1)
    said = []
    for sub, x_channels, y_channels, w_rows, w_columns in _blocks(spec, pass_name, wanted):
        if pass_name == "forward":
            said.append(method(sub, a[n, x_channels], b[w_rows, w_columns], out[n, y_channels]))
        elif pass_name == "input":
            said.append(method(sub, a[n, y_channels], read_only(np.ascontiguousarray(b[w_rows, w_columns])),
                               out[n, x_channels]))
        else:
            said.append(method(sub, a[n, x_channels], b[n, y_channels], out[w_rows, w_columns]))
    return said


def _blocks(spec, pass_name, wanted):
    """``(sub_spec, x_channels, y_channels, w_rows, w_columns)`` of each block of one sample."""
    group_in, group_out = spec.group_in_channels, spec.group_out_channels
    everything = slice(None)
    if spec.groups > 1:
        units = spec.groups
    else:
        units = spec.in_channels if pass_name == "input" else spec.out_channels
    count = min(units, wanted)
    for block in range(count):
        first, stop = units * block // count, units * (block + 1) // count
        if spec.groups > 1:
            x_channels, y_channels = slice(first * group_in, stop * group_in), slice(first * group_out, stop * group_out)
            sub = dataclasses.replace(spec, batch=1, groups=stop - first, in_channels=(stop - first) * group_in,
                                      out_channels=(stop - first) * group_out)
            yield sub, x_channels, y_channels, y_channels, everything
        elif pass_name == "input":
            sub = dataclasses.replace(spec, batch=1, in_channels=stop - first)
            yield sub, slice(first, stop), everything, everything, slice(first, stop)
        else:
            sub = dataclasses.replace(spec, batch=1, out_channels=stop - first)
            yield sub, everything, slice(first, stop), slice(first, stop), everything
