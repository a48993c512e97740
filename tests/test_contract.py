"""Every registered algorithm module keeps numbaconv.algorithm's contract."""
import inspect

import numpy as np
import pytest

from numbaconv import dispatch
from numbaconv.algorithm import Algorithm, read_only
from numbaconv.spec import ConvSpec

from conftest import random_array

MODULES = [(device, name, module) for device in ("cpu", "cuda")
           for name, module in dispatch.registry(device).items()]


@pytest.mark.parametrize("device, name, module", MODULES, ids=[f"{d}-{n}" for d, n, _ in MODULES])
def test_modules_offer_the_four_functions_with_the_contract_signatures(device, name, module):
    assert isinstance(module, Algorithm)
    for function in ("supports", "forward", "backward_input", "backward_weight"):
        expected = list(inspect.signature(getattr(Algorithm, function)).parameters)[1:]
        assert list(inspect.signature(getattr(module, function)).parameters) == expected, (name, function)
    slice_flops = getattr(module, "SLICE_FLOPS", None)
    assert slice_flops is None or (isinstance(slice_flops, int) and slice_flops > 0)
    assert set(getattr(module, "INEXACT_NONFINITE", {})) <= {"forward", "input", "weight"}


@pytest.mark.parametrize("name", sorted(dispatch.REGISTRY["cpu"]))
def test_partial_sums_in_a_fixed_order(rng, name):
    """The same operands give the same bits on every call (rule 4)."""
    module = dispatch.REGISTRY["cpu"][name]
    candidates = [ConvSpec.create((4, 16, 20, 20), (16, 16, 3, 3), padding=1),
                  ConvSpec.create((4, 16, 20, 20), (16, 1, 3, 3), padding=1, groups=16),
                  ConvSpec.create((2, 8, 4, 16, 16), (8, 8, 3, 3, 3), padding=1),
                  ConvSpec.create((4, 16, 300), (16, 16, 3), padding=1)]
    spec = next(s for s in candidates if module.supports(s.as_3d()) is None).as_3d()
    x, w, grad_y = (read_only(random_array(rng, shape, np.float32)) for shape in (spec.x_shape, spec.w_shape, spec.y_shape))
    for function, a, b, shape in ((module.forward, x, w, spec.y_shape), (module.backward_input, grad_y, w, spec.x_shape),
                                  (module.backward_weight, x, grad_y, spec.w_shape)):
        first, second = np.empty(shape, np.float32), np.empty(shape, np.float32)
        function(spec, a, b, first)
        function(spec, a, b, second)
        assert np.array_equal(first, second, equal_nan=True), function.__name__
