"""Sobel edges and a 5x5 Gaussian blur of a real photograph.

The photograph is scikit-image's bundled ``camera()`` (512x512, grey). Both
filters run through ``numbaconv.conv2d`` and are checked against
``scipy.ndimage``:

- numbaconv computes a cross-correlation (no kernel flip), which is
  ``ndimage.correlate``; ``ndimage.convolve`` flips the kernel, so it needs
  the kernel rotated by 180 degrees to agree.
- ``padding="same"`` pads with zeros: ``mode="constant", cval=0`` in ndimage
  (whose default, ``mode="reflect"``, differs in the one- and two-pixel frame).

    python examples/edges_and_blur.py [--small] [--out DIR]    # writes PNGs, prints DIR

Needs scikit-image, SciPy and matplotlib (``pip install -e ".[examples]"``).
"""
import argparse
import os

import numpy as np

import numbaconv as nc

SOBEL_X = np.array([[1, 0, -1], [2, 0, -2], [1, 0, -1]], np.float64)   # vertical edges
SOBEL_Y = SOBEL_X.T.copy()                                              # horizontal edges
GAUSSIAN_5X5 = np.array([                                               # normalised
    [0.003765, 0.015019, 0.023792, 0.015019, 0.003765],
    [0.015019, 0.059912, 0.094907, 0.059912, 0.015019],
    [0.023792, 0.094907, 0.150342, 0.094907, 0.023792],
    [0.015019, 0.059912, 0.094907, 0.059912, 0.015019],
    [0.003765, 0.015019, 0.023792, 0.015019, 0.003765]])

DEFAULT_OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "output", "edges_and_blur")


def filter_image(image):
    """(Sobel magnitude, Gaussian blur) of a 2-d float64 image, same size, zero-padded."""
    x = image[None, None]                                       # (N=1, C=1, H, W)
    sobel = nc.conv2d(x, np.stack([SOBEL_X, SOBEL_Y])[:, None], padding="same")   # 2 output channels
    magnitude = np.hypot(sobel[0, 0], sobel[0, 1])
    blurred = nc.conv2d(x, GAUSSIAN_5X5[None, None], padding="same")[0, 0]
    return magnitude, blurred


def check_against_scipy(image, magnitude, blurred):
    """Largest relative differences to scipy.ndimage, by name; raises if any exceeds 1e-12."""
    from scipy import ndimage

    def relative(ours, theirs):
        return float(np.abs(ours - theirs).max() / np.abs(theirs).max())

    zeros = dict(mode="constant", cval=0.0)
    differences = {
        "sobel vs ndimage.sobel (zero padding)":
            relative(magnitude, np.hypot(ndimage.sobel(image, 1, **zeros), ndimage.sobel(image, 0, **zeros))),
        "blur vs ndimage.correlate":
            relative(blurred, ndimage.correlate(image, GAUSSIAN_5X5, **zeros)),
        "sobel x vs ndimage.convolve, kernel rotated 180 degrees":
            relative(nc.conv2d(image[None, None], SOBEL_X[None, None], padding="same")[0, 0],
                     ndimage.convolve(image, SOBEL_X[::-1, ::-1], **zeros)),
    }
    for name, difference in differences.items():
        print(f"  {name:58s} max rel diff {difference:.1e}")
        if difference > 1e-12:
            raise AssertionError(f"numbaconv and scipy.ndimage disagree: {name}: {difference:.1e}")
    frame = np.abs(blurred - ndimage.correlate(image, GAUSSIAN_5X5))   # ndimage's default "reflect"
    print(f"  with ndimage's default mode='reflect' the blur differs by up to {frame.max():.3f} "
          f"in the 2-pixel frame and by {frame[2:-2, 2:-2].max():.1e} inside it")
    return differences


def main(small=False, out_dir=DEFAULT_OUT):
    """Filter camera() (its top-left 64x64 corner when ``small``), check, save PNGs; returns paths."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from skimage import data

    image = data.camera().astype(np.float64) / 255.0
    if small:
        image = image[:64, :64]
    magnitude, blurred = filter_image(image)
    print(f"camera() {image.shape}: Sobel magnitude and 5x5 Gaussian blur through numbaconv.conv2d")
    check_against_scipy(image, magnitude, blurred)

    os.makedirs(out_dir, exist_ok=True)
    paths = {}
    for name, picture in [("original", image), ("sobel", magnitude), ("gaussian", blurred)]:
        paths[name] = os.path.join(out_dir, f"camera_{name}.png")
        plt.imsave(paths[name], picture, cmap="gray")
    figure, axes = plt.subplots(1, 3, figsize=(9, 3.3))
    for axis, (title, picture) in zip(axes, [("camera()", image), ("Sobel magnitude", magnitude),
                                             ("5x5 Gaussian blur", blurred)]):
        axis.imshow(picture, cmap="gray")
        axis.set_title(title)
        axis.axis("off")
    figure.tight_layout()
    paths["panel"] = os.path.join(out_dir, "edges_and_blur.png")
    figure.savefig(paths["panel"], dpi=80)
    plt.close(figure)
    print(f"images written to {out_dir}")
    return paths


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="a 64x64 crop (quick check)")
    parser.add_argument("--out", default=DEFAULT_OUT, help=f"output folder (default {DEFAULT_OUT})")
    arguments = parser.parse_args()
    main(arguments.small, arguments.out)
