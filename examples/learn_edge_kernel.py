"""Learn an edge-detecting kernel from input/output pairs.

A 6x8 image of ones with a band of zeros in columns 2-5 is cross-correlated
with the vertical-edge kernel [1, -1]; the output is +1 at the one-to-zero
edge and -1 at the zero-to-one edge. A 1x2 convolution without bias, starting
from random weights, recovers the kernel by plain gradient descent on the
summed squared error, with numbaconv's gradients:

    python examples/learn_edge_kernel.py            # prints the loss and the learned kernel

Needs only NumPy and numbaconv.
"""
import argparse

import numpy as np

import numbaconv as nc
import numbaconv.nn as ncn


def main(steps=20, learning_rate=3e-2, seed=0):
    """Train for ``steps`` steps; returns (learned kernel as a (1, 2) array, list of losses)."""
    image = np.ones((6, 8))
    image[:, 2:6] = 0
    x = image.reshape(1, 1, 6, 8)
    edge_kernel = np.array([[[[1.0, -1.0]]]])
    y = nc.conv2d(x, edge_kernel)                  # (1, 1, 6, 7)
    print("target output (1 at a 1->0 edge, -1 at a 0->1 edge):")
    print(y[0, 0])

    conv = ncn.Conv2d(1, 1, kernel_size=(1, 2), bias=False, dtype=np.float64,
                      rng=np.random.default_rng(seed))
    print(f"initial kernel: {conv.weight.ravel().round(4)}")
    losses = []
    for step in range(1, steps + 1):
        error = conv.forward(x) - y
        losses.append(float((error ** 2).sum()))
        conv.backward(2 * error, input_grad=False)        # d(sum of squares)/d(output)
        for parameter, gradient in zip(conv.parameters(), conv.gradients()):
            parameter -= learning_rate * gradient
        if step % 5 == 0:
            print(f"step {step:3d}, loss {losses[-1]:.3f}")
    kernel = conv.weight.reshape(1, 2)
    print(f"learned kernel: {kernel.round(4)}   (target [[ 1. -1.]])")
    return kernel, losses


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20, help="gradient descent steps (default 20)")
    main(parser.parse_args().steps)
