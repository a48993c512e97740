"""The contract every algorithm module keeps (``numbaconv/cpu/*.py``, ``numbaconv/cuda/*.py``).

An algorithm is a module registered in ``numbaconv.dispatch.REGISTRY``; it
offers the four functions of :class:`Algorithm`. The engine
(numbaconv.functional) hands it a resolved 3-d problem (``ConvSpec.as_3d``:
1-d and 2-d problems have leading unit dims) and C-contiguous 5-d arrays of
one dtype: ``x (N, C, D, H, W)``, ``w (K, C/g, KD, KH, KW)``,
``y (N, K, OD, OH, OW)``. Every implementation keeps these rules
(tests/test_contract.py, tests/test_kernels.py, tests/test_readonly.py and
tests/test_workspace.py check them for every registered module):

1. It writes every element of its output (the tests poison outputs with NaN).
2. It never writes its inputs, and accepts read-only ones. On the CPU the
   engine hands them over read-only (:func:`read_only`): Numba types a
   read-only array apart from a writeable one, so every kernel compiles once,
   whatever the flags of the caller's arrays.
3. On the CPU it borrows scratch only from ``numbaconv.cpu.workspace`` and
   stays under its limit, or its ``supports`` declines the problem.
4. It adds partial sums in a fixed order: the same operands and thread
   count give the same bits on every call.
5. ``supports`` is cheap and pure: None when the module runs the problem,
   else a sentence saying why not (shown to users in errors).

Optional attributes, read by the engine on the CPU:

- ``SLICE_FLOPS``: the FLOPs of one uncut kernel call (numbaconv.slices); a
  module without it always runs a pass as one call.
- ``INEXACT_NONFINITE``: ``{pass: check}`` for the passes that place NaN and
  Inf otherwise than numbaconv.reference (numbaconv.functional says how the
  engine then keeps ``algo="auto"`` exact). A pass whose check is
  ``"result"`` may return whether every element of its output is finite
  (counted while the output was in cache), which spares the engine a pass
  over the output in memory; a pass that returns None leaves it to that
  pass.
"""
from __future__ import annotations

from typing import Protocol, runtime_checkable

from .spec import ConvSpec


@runtime_checkable
class Algorithm(Protocol):
    """One convolution algorithm: three passes and the test of what it runs."""

    def supports(self, spec: ConvSpec) -> str | None:
        """None if this algorithm runs ``spec``, else the reason it does not."""

    def forward(self, spec: ConvSpec, x, w, out) -> bool | None:
        """``out[n, k] = sum over c in k's group and taps of w[k, c, tap] * x[n, c] at the tap``."""

    def backward_input(self, spec: ConvSpec, grad_y, w, grad_x) -> bool | None:
        """``grad_x``: the gradient of the forward with respect to ``x`` for output gradient ``grad_y``."""

    def backward_weight(self, spec: ConvSpec, x, grad_y, grad_w) -> bool | None:
        """``grad_w``: the gradient of the forward with respect to ``w`` for output gradient ``grad_y``."""


PASS_FUNCTIONS = {"forward": "forward", "input": "backward_input", "weight": "backward_weight"}


def read_only(array):
    """``array`` (NumPy) as a read-only view, or itself where it already is read-only: the form in
    which the CPU algorithms receive their inputs (rule 2)."""
    if not array.flags.writeable:
        return array
    view = array.view()
    view.flags.writeable = False
    return view
