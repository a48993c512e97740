"""The (device, algorithm) registry and the choice of algorithm.

``algo="auto"`` on the CPU: im2col + GEMM, unless the reduction each output
sums over, ``(C / groups) * prod(kernel)``, is shorter than
``DIRECT_REDUCTION_LIMIT``; then the direct loops, because a matrix product
with so few rows (depthwise convolutions, tiny 1-channel filters) spends
more on unfolding the columns than on arithmetic.
"""
import math

from .cpu import direct as cpu_direct, im2col as cpu_im2col, shifted as cpu_shifted

REGISTRY = {
    "cpu": {"direct": cpu_direct, "im2col": cpu_im2col, "shifted": cpu_shifted},
}
DIRECT_REDUCTION_LIMIT = 16


def algorithms(device: str = "cpu") -> tuple[str, ...]:
    """Names of the algorithms available on ``device``."""
    if device not in REGISTRY:
        raise ValueError(f"unknown device {device!r}; devices with algorithms: {tuple(REGISTRY)}")
    return tuple(REGISTRY[device])


def choose(device: str, algo: str, spec):
    """The algorithm module that runs ``spec`` on ``device``."""
    candidates = REGISTRY[device]
    runnable = [name for name, module in candidates.items() if module.supports(spec) is None]
    if algo == "auto":
        reduction = spec.group_in_channels * math.prod(spec.kernel_size)
        preferred = "direct" if reduction < DIRECT_REDUCTION_LIMIT else "im2col"
        return candidates[preferred if preferred in runnable else runnable[0]]
    if algo not in candidates:
        raise ValueError(f"unknown algo {algo!r} for device {device!r}; "
                         f"choose 'auto' or one of {tuple(candidates)}")
    reason = candidates[algo].supports(spec)
    if reason is not None:
        raise ValueError(f"algo {algo!r} cannot run this problem ({reason}); "
                         f"algorithms that can: {tuple(runnable)}")
    return candidates[algo]
