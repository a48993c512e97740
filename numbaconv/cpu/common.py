"""Index helpers shared by the CPU kernels.

Along one spatial dim, output position ``o`` and kernel tap ``t`` read input
position ``i = o * stride - pad_lo + t * dilation``; taps that land in the
zero padding contribute nothing, so every kernel loops only over the outputs
whose input position is inside ``[0, in_len)``.
"""
from numba import njit


@njit(inline="always", cache=True)
def valid_outputs(tap, in_len, out_len, stride, dilation, pad_lo):
    """The range ``[first, stop)`` of outputs whose input ``o*stride - pad_lo + tap*dilation``
    lies in ``[0, in_len)``; empty when ``stop <= first``. ``0 <= first <= out_len``."""
    offset = tap * dilation - pad_lo
    # smallest o with o*stride + offset >= 0, and one past the largest with < in_len
    first = min(max(0, (-offset + stride - 1) // stride), out_len)
    stop = min(out_len, (in_len - 1 - offset) // stride + 1)
    return first, stop

