"""The three passes of a convolution by name, and zero-argument calls of them.

``"forward"`` is ``y = conv(x, w) + bias``, ``"input"`` the gradient with respect to the input,
``"weight"`` the gradient with respect to the weight. Plans (numbaconv.tuning), the command's
``--pass`` options and the tools' reports use these names.
"""
PASSES = ("forward", "input", "weight")


def pass_calls(engine, rank, arguments, x, w, grad_y, bias=None, **options) -> dict:
    """``{pass name: zero-argument call}`` of the three passes through ``engine`` (the module
    numbaconv.functional or numbaconv.reference, which share their signatures); ``arguments``
    are the convolution's (stride, padding, dilation, groups), ``options`` the engine's (algo,
    device); the forward adds ``bias``."""
    forward, input_grad, weight_grad = (getattr(engine, f"conv{rank}d{suffix}") for suffix in ("", "_input", "_weight"))
    return {
        "forward": lambda: forward(x, w, bias, **arguments, **options),
        "input": lambda: input_grad(x.shape, w, grad_y, **arguments, **options),
        "weight": lambda: weight_grad(x, w.shape, grad_y, **arguments, **options),
    }
