"""A small CNN trained on scikit-learn's handwritten digits, three ways.

The seed swaps ``torch.nn.Conv2d`` for its own convolution in a small CNN
(Conv 1->32 3x3, ReLU, Conv 32->64 3x3, BatchNorm, ReLU, MaxPool 2, two
Linear) and compares accuracy and training time on MNIST. Here the data is
``sklearn.datasets.load_digits`` (1797 8x8 images, bundled, no download), and
the same network, from the same initial weights and in the same data order,
is trained

1. with ``torch.nn.Conv2d``,
2. with ``numbaconv.torch.Conv2d`` (everything else still torch),
3. in NumPy alone: ``numbaconv.nn.Conv2d`` plus the few NumPy layers below.

It prints a table (test accuracy, training time), the time of one
training step with either convolution (alternating, best of several, after a
warm-up), and saves the three loss curves.

    python examples/digits_cnn.py [--small] [--out DIR]

Needs PyTorch, scikit-learn and matplotlib (``pip install -e ".[test,examples]"``).
"""
import argparse
import os
import time

import numpy as np
import torch

import numbaconv.nn as ncn
import numbaconv.torch as nct
from numbaconv.timing import best_times

DEFAULT_OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "output", "digits_cnn")


def build_cnn(conv=torch.nn.Conv2d, image_size=8, classes=10):
    """The network for ``image_size`` x ``image_size`` grey images; ``conv`` makes the convs."""
    flat = 64 * ((image_size - 4) // 2) ** 2
    return torch.nn.Sequential(
        conv(1, 32, 3), torch.nn.ReLU(), conv(32, 64, 3), torch.nn.BatchNorm2d(64), torch.nn.ReLU(),
        torch.nn.MaxPool2d(2), torch.nn.Flatten(), torch.nn.Linear(flat, 256), torch.nn.ReLU(),
        torch.nn.Linear(256, classes))


def time_training_steps(models, x, labels, *, steps=5, repeats=5, warmup=3):
    """Best seconds per SGD training step of each model, timed alternately after ``warmup`` steps
    (numbaconv.timing: ``repeats`` rounds of ``steps`` steps each)."""
    def step(model, optimizer):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(x), labels).backward()
        optimizer.step()

    steppers = [lambda model=model, optimizer=torch.optim.SGD(model.parameters(), lr=1e-3): step(model, optimizer)
                for model in models.values()]
    return dict(zip(models, best_times(steppers, warmup=warmup, rounds=repeats, number=steps)))


# --- NumPy layers for the pure-NumPy run: forward(x) -> y, backward(grad_y) -> grad_x ---------------

class ReLU:
    def forward(self, x):
        self.mask = x > 0
        return x * self.mask

    def backward(self, grad_y):
        return grad_y * self.mask


class MaxPool2d:
    """2x2 max pooling, stride 2 (even sizes); the gradient goes to the first maximum of each window."""

    def forward(self, x):
        n, c, h, w = x.shape
        windows = x.reshape(n, c, h // 2, 2, w // 2, 2).transpose(0, 1, 2, 4, 3, 5).reshape(n, c, h // 2, w // 2, 4)
        self.shape, self.argmax = x.shape, windows.argmax(axis=-1)
        return np.take_along_axis(windows, self.argmax[..., None], axis=-1)[..., 0]

    def backward(self, grad_y):
        n, c, h, w = self.shape
        windows = np.zeros((n, c, h // 2, w // 2, 4), grad_y.dtype)
        np.put_along_axis(windows, self.argmax[..., None], grad_y[..., None], axis=-1)
        return windows.reshape(n, c, h // 2, w // 2, 2, 2).transpose(0, 1, 2, 4, 3, 5).reshape(self.shape)


class BatchNorm2d:
    """Batch statistics in training, running statistics (momentum 0.1, unbiased variance) in eval."""

    def __init__(self, channels, eps=1e-5, momentum=0.1):
        self.weight, self.bias = np.ones(channels, np.float32), np.zeros(channels, np.float32)
        self.running_mean, self.running_var = np.zeros(channels, np.float32), np.ones(channels, np.float32)
        self.eps, self.momentum, self.training = eps, momentum, True

    def forward(self, x):
        axes, shape = (0, 2, 3), (1, -1, 1, 1)
        if self.training:
            mean, var = x.mean(axis=axes), x.var(axis=axes)
            count = x.size / x.shape[1]
            self.running_mean += self.momentum * (mean - self.running_mean)
            self.running_var += self.momentum * (var * count / (count - 1) - self.running_var)
        else:
            mean, var = self.running_mean, self.running_var
        self.inv_std = (1 / np.sqrt(var + self.eps)).astype(np.float32)
        self.normalised = (x - mean.reshape(shape)) * self.inv_std.reshape(shape)
        return self.normalised * self.weight.reshape(shape) + self.bias.reshape(shape)

    def backward(self, grad_y):
        axes, shape = (0, 2, 3), (1, -1, 1, 1)
        self.grad_weight = (grad_y * self.normalised).sum(axis=axes)
        self.grad_bias = grad_y.sum(axis=axes)
        count = grad_y.size / grad_y.shape[1]
        grad_normalised = grad_y * self.weight.reshape(shape)
        return self.inv_std.reshape(shape) * (
            grad_normalised - grad_normalised.mean(axis=axes, keepdims=True)
            - self.normalised * (grad_normalised * self.normalised).sum(axis=axes, keepdims=True) / count)

    def parameters(self):
        return [self.weight, self.bias]

    def gradients(self):
        return [self.grad_weight, self.grad_bias]


class Flatten:
    def forward(self, x):
        self.shape = x.shape
        return x.reshape(len(x), -1)

    def backward(self, grad_y):
        return grad_y.reshape(self.shape)


class Linear:
    def __init__(self, in_features, out_features):
        self.weight = np.zeros((out_features, in_features), np.float32)
        self.bias = np.zeros(out_features, np.float32)

    def forward(self, x):
        self.input = x
        return x @ self.weight.T + self.bias

    def backward(self, grad_y):
        self.grad_weight, self.grad_bias = grad_y.T @ self.input, grad_y.sum(axis=0)
        return grad_y @ self.weight

    def parameters(self):
        return [self.weight, self.bias]

    def gradients(self):
        return [self.grad_weight, self.grad_bias]


class NumpyCNN:
    """build_cnn() in NumPy, starting from a torch model's parameters (same order as .parameters())."""

    def __init__(self, torch_model):
        flat = torch_model[7].in_features
        self.layers = [ncn.Conv2d(1, 32, 3), ReLU(), ncn.Conv2d(32, 64, 3), BatchNorm2d(64), ReLU(),
                       MaxPool2d(), Flatten(), Linear(flat, 256), ReLU(), Linear(256, 10)]
        for ours, theirs in zip(self.parameters(), torch_model.parameters()):
            ours[...] = theirs.detach().numpy()

    def parameters(self):
        return [p for layer in self.layers if hasattr(layer, "parameters") for p in layer.parameters()]

    def gradients(self):
        return [g for layer in self.layers if hasattr(layer, "gradients") for g in layer.gradients()]

    def forward(self, x, training=True):
        for layer in self.layers:
            if isinstance(layer, BatchNorm2d):
                layer.training = training
            x = layer.forward(x)
        return x

    def backward(self, grad_logits):
        first = self.layers[0]
        for layer in reversed(self.layers[1:]):
            grad_logits = layer.backward(grad_logits)
        first.backward(grad_logits, input_grad=False)      # nobody needs the image's gradient


def softmax_cross_entropy(logits, labels):
    """(mean cross-entropy loss, its gradient with respect to the logits)."""
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_probabilities = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    rows = np.arange(len(labels))
    grad = np.exp(log_probabilities)
    grad[rows, labels] -= 1
    return float(-log_probabilities[rows, labels].mean()), grad / len(labels)


# --- training -------------------------------------------------------------------------------------

def load_data(small):
    """(train images, train labels, test images, test labels): float32 (N, 1, 8, 8) in [0, 1]."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = (digits.images / 16.0).astype(np.float32)[:, None]
    x_train, x_test, y_train, y_test = train_test_split(
        images, digits.target, test_size=0.2, random_state=0, stratify=digits.target)
    if small:
        x_train, y_train, x_test, y_test = x_train[:256], y_train[:256], x_test[:128], y_test[:128]
    return x_train, y_train, x_test, y_test


def train_torch(model, data, orders, batch, lr, momentum):
    """Per-step losses, test accuracy and seconds for SGD training of a torch model."""
    x_train, y_train, x_test, y_test = (torch.from_numpy(np.asarray(a)) for a in data)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum)
    losses, start = [], time.perf_counter()
    model.train()
    for order in orders:
        for first in range(0, len(order), batch):
            rows = torch.from_numpy(order[first:first + batch])
            optimizer.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(x_train[rows]), y_train[rows])
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
    seconds = time.perf_counter() - start
    model.eval()
    with torch.no_grad():
        accuracy = (model(x_test).argmax(dim=1) == y_test).double().mean().item()
    return losses, accuracy, seconds


def train_numpy(model, data, orders, batch, lr, momentum):
    """train_torch's loop for a NumpyCNN: the same SGD with momentum, written out."""
    x_train, y_train, x_test, y_test = data
    velocities = [np.zeros_like(p) for p in model.parameters()]
    losses, start = [], time.perf_counter()
    for order in orders:
        for first in range(0, len(order), batch):
            rows = order[first:first + batch]
            loss, grad_logits = softmax_cross_entropy(model.forward(x_train[rows]), y_train[rows])
            model.backward(grad_logits)
            for parameter, gradient, velocity in zip(model.parameters(), model.gradients(), velocities):
                velocity *= momentum
                velocity += gradient
                parameter -= lr * velocity
            losses.append(loss)
    seconds = time.perf_counter() - start
    accuracy = float((model.forward(x_test, training=False).argmax(axis=1) == y_test).mean())
    return losses, accuracy, seconds


def main(small=False, out_dir=DEFAULT_OUT, epochs=10, batch=64, lr=0.05, momentum=0.9, seed=0):
    """Train the three versions, print the table and step times, save the loss plot; returns results."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = load_data(small)
    epochs = 1 if small else epochs
    rng = np.random.default_rng(seed)
    orders = [rng.permutation(len(data[0])) for _ in range(epochs)]   # one data order for all runs
    torch.manual_seed(seed)
    torch_model = build_cnn(torch.nn.Conv2d)
    numbaconv_model = build_cnn(nct.Conv2d)
    numbaconv_model.load_state_dict(torch_model.state_dict())
    numpy_model = NumpyCNN(torch_model)
    print(f"digits: {len(data[0])} training and {len(data[2])} test images of 8x8, {epochs} epochs of "
          f"SGD (lr {lr}, momentum {momentum}, batch {batch}), torch threads {torch.get_num_threads()}")

    # compile numbaconv's kernels before anything is timed, on throwaway models
    build_cnn(nct.Conv2d)(torch.from_numpy(data[0][:batch])).sum().backward()
    throwaway = NumpyCNN(torch_model)
    throwaway.backward(softmax_cross_entropy(throwaway.forward(data[0][:batch]), data[1][:batch])[1])

    results = {
        "torch.nn.Conv2d": train_torch(torch_model, data, orders, batch, lr, momentum),
        "numbaconv.torch.Conv2d": train_torch(numbaconv_model, data, orders, batch, lr, momentum),
        "numbaconv.nn (NumPy only)": train_numpy(numpy_model, data, orders, batch, lr, momentum),
    }
    print(f"\n{'model':28s} {'accuracy':>9s} {'time cost (s)':>14s}")
    for name, (_, accuracy, seconds) in results.items():
        print(f"{name:28s} {accuracy:9.1%} {seconds:14.2f}")

    models = {"torch.nn.Conv2d": build_cnn(torch.nn.Conv2d), "numbaconv.torch.Conv2d": build_cnn(nct.Conv2d)}
    rows = torch.from_numpy(orders[0][:batch])
    step = time_training_steps(models, torch.from_numpy(data[0])[rows], torch.from_numpy(data[1])[rows],
                               steps=2 if small else 10, repeats=2 if small else 7)
    print(f"\none training step, batch {batch} of 8x8 (best of alternating repeats): torch.nn.Conv2d "
          f"{step['torch.nn.Conv2d'] * 1e3:.2f} ms, numbaconv.torch.Conv2d "
          f"{step['numbaconv.torch.Conv2d'] * 1e3:.2f} ms, ratio (torch / numbaconv) "
          f"{step['torch.nn.Conv2d'] / step['numbaconv.torch.Conv2d']:.2f}")

    os.makedirs(out_dir, exist_ok=True)
    figure, axis = plt.subplots(figsize=(6, 3.5))
    for (name, (losses, accuracy, _)), style in zip(results.items(), ["-", "--", ":"]):
        axis.plot(losses, style, label=f"{name} ({accuracy:.1%})")
    axis.set_xlabel("training step")
    axis.set_ylabel("cross-entropy loss")
    axis.set_yscale("log")
    axis.set_title("a small CNN on sklearn digits, same start and data order")
    axis.legend()
    figure.tight_layout()
    path = os.path.join(out_dir, "digits_loss.png")
    figure.savefig(path, dpi=80)
    plt.close(figure)
    print(f"loss curves written to {out_dir}")
    return {"results": results, "step_seconds": step, "plot": path}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="256 images, 1 epoch (quick check)")
    parser.add_argument("--out", default=DEFAULT_OUT, help=f"output folder (default {DEFAULT_OUT})")
    arguments = parser.parse_args()
    main(arguments.small, arguments.out)
