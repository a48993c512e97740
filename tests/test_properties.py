"""Property-based test (Hypothesis): random valid problems, every CPU algorithm, every pass, checked
against the float64 reference (numbaconv.reference).

One example draws:

- the problem: rank 1-3, batch 0-3, groups 1-3 with 1-3 input and 1-4 output channels per group
  (one input channel per group is depthwise, with or without a channel multiplier), kernel 1-3
  per dim, stride 1-3, dilation 1-2, padding in every form the API takes (an int, one int per
  dim, one (low, high) pair per dim, "valid", "same"), and spatial sizes that fit the padded
  kernel extent (built valid, then checked by ConvSpec.create), the last dim sometimes 16-24
  wide (im2col's run-by-run rows). Half the examples are such general problems, a third are
  3x3 stride-1 dilation-1 2-d problems (or 3-d with a unit depth), which Winograd runs, and a
  sixth depthwise 3x3 stride-1 ones padded by their dilation, which the depthwise algorithm
  runs;
- the dtype, float32 or float64;
- the memory layout of each operand (input, weight, bias, grad_output, the transposed
  convolution's input and bias): C-contiguous, Fortran order, negative strides (a reversed view
  of a reversed copy, holding the intended values), or a strided view into a larger array
  filled with NaN (a read outside the view shows); and, independently, read-only
  (``flags.writeable = False``);
- the transposed convolution's output_padding (any value below max(stride, dilation)).

For every CPU algorithm whose ``supports(spec.as_3d())`` is None, and "auto", it runs the
forward pass with bias (conv{n}d), the input gradient (conv{n}d_input), the weight gradient
(conv{n}d_weight), all three gradients and the bias gradient at once (conv{n}d_backward) and,
with the padding as numbers (a string form becomes the (low, high) pairs it resolved to), the
transposed convolution (conv_transpose{n}d, whose own forward problem picks its algorithms).
Each result must have the expected shape and dtype and match the reference within
tests/conftest.py's norm-relative tolerance; after each call every operand (and the whole
larger array behind a strided view) must equal the copy taken before.

Examples: ``DEFAULT_EXAMPLES`` per run, derandomized (``derandomize=True``: the examples are a
fixed function of the test, so CI runs the same ones every time). Set
``NUMBACONV_HYPOTHESIS_EXAMPLES=N`` to run N examples instead, randomized (a fresh seed each
run; a failure prints the ``@reproduce_failure`` blob to replay it):

    NUMBACONV_HYPOTHESIS_EXAMPLES=500 python -m pytest -q tests/test_properties.py

No example database is kept (``database=None``: nothing is written into the tree).
"""
import dataclasses
import os

import numpy as np
from hypothesis import HealthCheck, event, given, settings, strategies as st

from conftest import assert_close
import numbaconv as nc
from numbaconv import dispatch, reference
from numbaconv.spec import ConvSpec, transpose_output_size

DEFAULT_EXAMPLES = 40
_LONG_RUN = os.environ.get("NUMBACONV_HYPOTHESIS_EXAMPLES")
settings.register_profile(
    "numbaconv-ci", max_examples=DEFAULT_EXAMPLES, deadline=None, derandomize=True, database=None,
    print_blob=True, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.register_profile(
    "numbaconv-long", settings.get_profile("numbaconv-ci"),
    max_examples=int(_LONG_RUN or DEFAULT_EXAMPLES), derandomize=False)
SETTINGS = settings.get_profile("numbaconv-long" if _LONG_RUN else "numbaconv-ci")

DTYPES = (np.float32, np.float64)
LAYOUTS = ("C", "F", "negative", "strided")
PADDING_FORMS = ("int", "per-dim", "pairs", "valid", "same")


@dataclasses.dataclass
class Problem:
    rank: int
    x_shape: tuple
    w_shape: tuple
    stride: object             # an int (the same in every dim) or one int per dim
    padding: object            # as the caller passes it: int, ints, pairs, "valid" or "same"
    dilation: object           # as stride
    groups: int
    output_padding: tuple      # for the transposed convolution

    @property
    def geometry(self):
        return dict(stride=self.stride, padding=self.padding, dilation=self.dilation, groups=self.groups)


@st.composite
def problems(draw):
    """A valid problem, built so: sizes are drawn after the padding, at least the kernel extent."""
    family = draw(st.sampled_from(["general", "general", "general", "3x3", "3x3", "depthwise3x3"]))
    rank = draw(st.integers(1, 3) if family == "general" else st.integers(2, 3))
    groups = draw(st.integers(1, 3))
    group_in = 1 if family == "depthwise3x3" else draw(st.integers(1, 3))
    group_out = draw(st.integers(1, 4))
    kernel, stride, dilation, required = [], [], [], []   # required: a (low, high) pad or None (free)
    for dim in range(rank):
        if family != "general" and rank == 3 and dim == 0:   # a unit depth: still a 2-d problem
            kernel.append(1), stride.append(1), dilation.append(1), required.append((0, 0))
        elif family != "general":
            d = 1 if family == "3x3" else draw(st.integers(1, 2))
            kernel.append(3), stride.append(1), dilation.append(d)
            required.append((d, d) if family == "depthwise3x3" else None)
        else:
            kernel.append(draw(st.integers(1, 3))), stride.append(draw(st.integers(1, 3)))
            dilation.append(draw(st.integers(1, 2))), required.append(None)

    # the padding forms that can express the required pads ("same" always gives them here)
    fixed = {pair for pair in required if pair is not None}
    forms = ["pairs", "same"]
    if all(lo == hi for lo, hi in fixed):
        forms.append("per-dim")
        if len(fixed) <= 1:   # the free dims take the required value too
            forms.append("int")
    if fixed <= {(0, 0)}:
        forms.append("valid")
    form = draw(st.sampled_from([f for f in PADDING_FORMS if f in forms]))
    pad = st.integers(0, 3)
    if form == "int":
        value = next(iter(fixed))[0] if fixed else draw(pad)
        padding, pairs = value, [(value, value)] * rank
    elif form == "per-dim":
        values = [r[0] if r is not None else draw(pad) for r in required]
        padding, pairs = tuple(values), [(v, v) for v in values]
    elif form == "pairs":
        pairs = [r if r is not None else (draw(pad), draw(pad)) for r in required]
        padding = tuple(pairs)
    elif form == "valid":
        padding, pairs = "valid", [(0, 0)] * rank
    else:
        padding, pairs = "same", None

    size = []
    for dim in range(rank):
        extent = dilation[dim] * (kernel[dim] - 1) + 1
        least = 1 if pairs is None else max(1, extent - sum(pairs[dim]))
        if family == "3x3" and rank == 3 and dim == 0:
            size.append(1)
        elif dim == rank - 1 and rank < 3 and draw(st.integers(0, 4)) == 0:
            size.append(draw(st.integers(max(least, 16), max(least, 16) + 8)))   # wide output rows
        else:
            size.append(draw(st.integers(least, least + (5 if rank < 3 else 3))))

    batch = draw(st.integers(0, 3))
    x_shape = (batch, groups * group_in, *size)
    w_shape = (groups * group_out, group_in, *kernel)
    if draw(st.booleans()):   # ints where every dim has the same value, as a caller writes them
        stride = stride[0] if len(set(stride)) == 1 else tuple(stride)
        dilation = dilation[0] if len(set(dilation)) == 1 else tuple(dilation)
    else:
        stride, dilation = tuple(stride), tuple(dilation)
    spec = ConvSpec.create(x_shape, w_shape, stride, padding, dilation, groups)   # raises if invalid
    output_padding = tuple(draw(st.integers(0, max(s, d) - 1)) for s, d in zip(spec.stride, spec.dilation))
    event(f"family {family}, padding {form}")
    return Problem(rank, x_shape, w_shape, stride, padding, dilation, groups, output_padding)


class Operands:
    """Arrays laid out as drawn, with the copies taken before any call to check them against."""

    def __init__(self, rng, dtype, layouts):
        self.rng, self.dtype, self.layouts = rng, dtype, layouts
        self.checks = []   # (name, array the caller holds, copy of its values) and the strided bases

    def make(self, name, shape):
        values = self.rng.standard_normal(shape).astype(self.dtype)
        layout, read_only = self.layouts.get(name, ("C", False))
        event(f"layout {layout}{' read-only' if read_only else ''}")
        array = laid_out(values, layout)
        np.testing.assert_array_equal(array, values)
        if read_only:
            array.flags.writeable = False
        self.checks.append((name, array, values.copy()))
        if array.base is not None and layout == "strided":
            self.checks.append((f"{name} (the array around it)", array.base, array.base.copy()))
        return array, values

    def assert_unchanged(self, after):
        for name, array, before in self.checks:
            np.testing.assert_array_equal(array, before, err_msg=f"{name} changed by {after}")


def laid_out(values, layout):
    """``values`` in ``layout``: the same values, other strides."""
    everything = (slice(None),) * values.ndim
    reverse = (slice(None, None, -1),) * values.ndim
    if layout == "C":
        return np.ascontiguousarray(values)
    if layout == "F":
        return np.asfortranarray(values)
    if layout == "negative":
        return np.ascontiguousarray(values[reverse])[reverse]
    # strided: every other element of a larger NaN-filled array, one element in from its start
    base = np.full(tuple(2 * n + 1 for n in values.shape), np.nan, values.dtype)
    view = base[tuple(slice(1, 1 + 2 * n, 2) for n in values.shape)]
    view[everything] = values
    assert not view.flags.c_contiguous or values.size <= 1
    return view


def runnable(spec):
    """The CPU algorithms that run ``spec`` (the public functions' 3-d form), and "auto"."""
    spec3d = spec.as_3d()
    names = sorted(name for name, module in dispatch.REGISTRY["cpu"].items() if module.supports(spec3d) is None)
    for name in names:
        event(f"algo {name}")
    return names + ["auto"]


def check(result, expected, dtype, what):
    assert isinstance(result, np.ndarray), f"{what}: returned {type(result).__name__}"
    assert result.dtype == dtype, f"{what}: dtype {result.dtype}, operands {np.dtype(dtype)}"
    assert result.shape == expected.shape, f"{what}: shape {result.shape}, expected {expected.shape}"
    assert_close(result, expected, dtype, what)


OPERAND_NAMES = ("input", "weight", "bias", "grad_output", "transpose_input", "transpose_bias")


@settings(SETTINGS)
@given(problem=problems(), dtype=st.sampled_from(DTYPES), seed=st.integers(0, 2**32 - 1),
       layouts=st.fixed_dictionaries({name: st.tuples(st.sampled_from(LAYOUTS), st.booleans())
                                      for name in OPERAND_NAMES}))
def test_matches_reference(problem, dtype, seed, layouts):
    spec = ConvSpec.create(problem.x_shape, problem.w_shape, problem.stride, problem.padding,
                           problem.dilation, problem.groups)
    d = f"{problem.rank}d"
    conv, conv_input, conv_weight = (getattr(nc, f"conv{d}{suffix}") for suffix in ("", "_input", "_weight"))
    conv_backward, conv_transpose = getattr(nc, f"conv{d}_backward"), getattr(nc, f"conv_transpose{d}")
    operands = Operands(np.random.default_rng(seed), dtype, layouts)
    x, x_values = operands.make("input", spec.x_shape)
    w, w_values = operands.make("weight", spec.w_shape)
    bias, bias_values = operands.make("bias", (spec.out_channels,))
    grad_y, grad_y_values = operands.make("grad_output", spec.y_shape)

    bias_column = bias_values.astype(np.float64).reshape(-1, *(1,) * problem.rank)
    y_expected = reference.forward(spec, x_values, w_values) + bias_column
    grad_x_expected = reference.backward_input(spec, grad_y_values, w_values)
    grad_w_expected = reference.backward_weight(spec, x_values, grad_y_values)
    grad_b_expected = reference.backward_bias(grad_y_values)

    for algo in runnable(spec):
        options = dict(problem.geometry, algo=algo, device="cpu")
        check(conv(x, w, bias, **options), y_expected, dtype, f"conv{d} algo={algo}")
        operands.assert_unchanged(f"conv{d} algo={algo}")
        check(conv_input(spec.x_shape, w, grad_y, **options), grad_x_expected, dtype, f"conv{d}_input algo={algo}")
        operands.assert_unchanged(f"conv{d}_input algo={algo}")
        check(conv_weight(x, spec.w_shape, grad_y, **options), grad_w_expected, dtype, f"conv{d}_weight algo={algo}")
        operands.assert_unchanged(f"conv{d}_weight algo={algo}")
        grads = conv_backward(grad_y, x, w, **options)
        assert isinstance(grads, tuple) and len(grads) == 3, f"conv{d}_backward algo={algo}: {type(grads)}"
        for got, want, name in zip(grads, (grad_x_expected, grad_w_expected, grad_b_expected),
                                   ("input", "weight", "bias")):
            check(got, want, dtype, f"conv{d}_backward algo={algo}: {name} gradient")
        operands.assert_unchanged(f"conv{d}_backward algo={algo}")

    # The transposed convolution: the input gradient of the forward problem whose input has the
    # transposed output's size, at grad_output = its input zero-extended (output_padding >= stride).
    pairs = tuple(zip(spec.pad_lo, spec.pad_hi))
    padding = pairs if isinstance(problem.padding, str) else problem.padding
    out_size = transpose_output_size(spec.out_size, spec.kernel_size, spec.stride, spec.pad_lo,
                                     spec.pad_hi, spec.dilation, problem.output_padding)
    if min(out_size) < 1:
        event("transpose: empty output, skipped")
        return
    spec_t = ConvSpec.create((spec.batch, spec.in_channels, *out_size), spec.w_shape, spec.stride, pairs,
                             spec.dilation, spec.groups)
    t_in, t_in_values = operands.make("transpose_input", spec.y_shape)
    t_bias, t_bias_values = operands.make("transpose_bias", (spec.in_channels,))
    extended = np.pad(t_in_values, [(0, 0), (0, 0)] + [(0, want - have) for have, want in
                                                        zip(spec.out_size, spec_t.out_size)])
    t_expected = (reference.backward_input(spec_t, extended, w_values)
                  + t_bias_values.astype(np.float64).reshape(-1, *(1,) * problem.rank))
    for algo in runnable(spec_t):
        what = f"conv_transpose{d} algo={algo} output_padding={problem.output_padding}"
        result = conv_transpose(t_in, w, t_bias, stride=problem.stride, padding=padding,
                                output_padding=problem.output_padding, groups=problem.groups,
                                dilation=problem.dilation, algo=algo, device="cpu")
        check(result, t_expected, dtype, what)
        operands.assert_unchanged(what)
