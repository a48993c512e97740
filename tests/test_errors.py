"""Bad input: each case raises its specific exception with a message naming the problem,
and nothing is written into the caller's arrays."""
import numpy as np
import pytest

import numbaconv as nc

X = np.ones((2, 4, 6, 6))
W = np.ones((6, 2, 3, 3))
GY = np.ones((2, 6, 4, 4))


def _device(array):
    """A GPU copy (a real GPU, or the simulator tests/conftest.py turns on)."""
    from numba import cuda
    return cuda.to_device(array)


BAD_CALLS = [
    # (id, call, exception, message fragment)
    ("input-rank", lambda: nc.conv2d(X[0], W), ValueError, "4 dims"),
    ("weight-rank", lambda: nc.conv2d(X, W[0]), ValueError, "4 dims"),
    ("channels-mismatch", lambda: nc.conv2d(X, np.ones((6, 3, 3, 3))), ValueError, "input_channels / groups"),
    ("groups-not-dividing-input", lambda: nc.conv2d(X, np.ones((6, 1, 3, 3)), groups=3), ValueError, "divide"),
    ("groups-not-dividing-output", lambda: nc.conv2d(X, np.ones((5, 2, 3, 3)), groups=2), ValueError, "divide"),
    ("groups-zero", lambda: nc.conv2d(X, W, groups=0), ValueError, "groups"),
    ("groups-float", lambda: nc.conv2d(X, W, groups=2.0), TypeError, "groups"),
    ("kernel-larger-than-padded-input", lambda: nc.conv2d(X, np.ones((6, 4, 9, 3))), ValueError, "larger than the padded"),
    ("dilated-kernel-too-large", lambda: nc.conv2d(X, np.ones((6, 4, 3, 3)), dilation=3), ValueError, "extent"),
    ("negative-padding", lambda: nc.conv2d(X, np.ones((6, 4, 3, 3)), padding=-1), ValueError, "non-negative"),
    ("negative-pad-pair", lambda: nc.conv2d(X, np.ones((6, 4, 3, 3)), padding=((0, -1), (0, 0))), ValueError, "non-negative"),
    ("padding-wrong-length", lambda: nc.conv2d(X, np.ones((6, 4, 3, 3)), padding=(1, 1, 1)), TypeError, "padding"),
    ("padding-unknown-string", lambda: nc.conv2d(X, np.ones((6, 4, 3, 3)), padding="full"), ValueError, "'valid' or 'same'"),
    ("stride-zero", lambda: nc.conv2d(X, np.ones((6, 4, 3, 3)), stride=0), ValueError, "stride"),
    ("stride-float", lambda: nc.conv2d(X, np.ones((6, 4, 3, 3)), stride=1.5), TypeError, "stride"),
    ("stride-wrong-length", lambda: nc.conv2d(X, np.ones((6, 4, 3, 3)), stride=(1, 1, 1)), ValueError, "stride"),
    ("dilation-zero", lambda: nc.conv2d(X, np.ones((6, 4, 3, 3)), dilation=(1, 0)), ValueError, "dilation"),
    ("integer-dtype", lambda: nc.conv2d(X.astype(np.int64), W.astype(np.int64), groups=2), TypeError, "float32 and float64"),
    ("float16", lambda: nc.conv2d(X.astype(np.float16), W.astype(np.float16), groups=2), TypeError, "float16"),
    ("mixed-dtypes", lambda: nc.conv2d(X.astype(np.float32), W, groups=2), TypeError, "one dtype"),
    ("bias-dtype", lambda: nc.conv2d(X, W, np.ones(6, np.float32), groups=2), TypeError, "one dtype"),
    ("bias-shape", lambda: nc.conv2d(X, W, np.ones(5), groups=2), ValueError, "bias"),
    ("not-an-array", lambda: nc.conv2d("image", W, groups=2), TypeError, "input"),
    ("object-array", lambda: nc.conv2d(np.array([None] * 4), W), TypeError, "object"),
    ("empty-kernel", lambda: nc.conv2d(X, np.ones((6, 2, 0, 3)), groups=2), ValueError, "empty kernel"),
    ("grad-output-shape", lambda: nc.conv2d_input(X.shape, W, GY[:, :, :3], groups=2), ValueError, "grad_output"),
    ("grad-output-shape-weight", lambda: nc.conv2d_weight(X, W.shape, GY[:1], groups=2), ValueError, "grad_output"),
    ("input-shape-not-ints", lambda: nc.conv2d_input((2, 4, 6.0, 6), W, GY, groups=2), TypeError, "shape"),
    ("backward-dtype", lambda: nc.conv2d_backward(GY.astype(np.float32), X, W, groups=2), TypeError, "one dtype"),
    ("unknown-algo", lambda: nc.conv2d(X, W, groups=2, algo="karatsuba"), ValueError, "direct"),
    ("unknown-device", lambda: nc.conv2d(X, W, groups=2, device="gpu"), ValueError, "device"),
    ("gpu-dtype", lambda: nc.conv2d(_device(X.astype(np.float16)), _device(W.astype(np.float16)), groups=2), TypeError, "float16"),
    ("gpu-shape", lambda: nc.conv2d(_device(X), _device(W)), ValueError, "input_channels / groups"),
    ("gpu-mixed-dtype", lambda: nc.conv2d(_device(X), W.astype(np.float32), groups=2), TypeError, "one dtype"),
    ("cpu-given-gpu-array", lambda: nc.conv2d(X, _device(W), groups=2, device="cpu"), ValueError, "GPU arrays"),
    ("transpose-output-padding", lambda: nc.conv_transpose2d(GY, W, stride=2, output_padding=2, groups=2), ValueError, "output_padding"),
    ("transpose-same", lambda: nc.conv_transpose2d(GY, W, padding="same", groups=2), ValueError, "numeric padding"),
    ("transpose-channels", lambda: nc.conv_transpose2d(X, W, groups=2), ValueError, "channels"),
    ("transpose-empty-output", lambda: nc.conv_transpose2d(GY, W, padding=5, groups=2), ValueError, "empty output"),
    ("transpose-groups-float", lambda: nc.conv_transpose2d(GY, W, groups=2.0), TypeError, "groups"),
    ("transpose-groups-zero", lambda: nc.conv_transpose2d(GY, W, groups=0), ValueError, "groups"),
    ("transpose-bias", lambda: nc.conv_transpose2d(GY, W, np.ones(6), groups=2), ValueError, "bias"),
    ("rank-1-given-2d", lambda: nc.conv1d(X, W), ValueError, "3 dims"),
    ("rank-3-given-2d", lambda: nc.conv3d(X, W), ValueError, "5 dims"),
    ("reference-algo", lambda: nc.reference.conv2d(X, W, groups=2, algo="direct"), ValueError, "reference"),
]


@pytest.mark.parametrize("call, exception, fragment", [c[1:] for c in BAD_CALLS],
                         ids=[c[0] for c in BAD_CALLS])
def test_bad_input_raises_specific_error(call, exception, fragment):
    snapshots = [a.copy() for a in (X, W, GY)]
    with pytest.raises(exception, match=fragment):
        call()
    for snapshot, array in zip(snapshots, (X, W, GY)):
        np.testing.assert_array_equal(snapshot, array)


def test_shape_errors_name_the_shapes():
    with pytest.raises(ValueError) as error:
        nc.conv2d(X, np.ones((6, 3, 3, 3)))
    assert "(2, 4, 6, 6)" in str(error.value) and "(6, 3, 3, 3)" in str(error.value)
