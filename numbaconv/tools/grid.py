"""The grid of small convolution problems that reach every path of every CPU algorithm:
tests/test_kernels.py checks every algorithm on it and ``numbaconv compile`` compiles
every kernel by running it.

Each case: (name, x_shape, w_shape, stride, padding, dilation, groups).
Together they cover 1-d/2-d/3-d, asymmetric and "same" padding (at stride 1
and 2), stride larger than the kernel, dilation, groups, depthwise (with and
without a channel multiplier, at stride 1 and 2; 3x3 "same" ones with planes
shorter than the dilated kernel and of one pixel), non-square shapes, 1x1
kernels (strided, and grouped at stride 1 with outputs enough for im2col's
pointwise views), kernel equal to the input, kernels larger than the
unpadded input, and batch 1 and more; 3x3 stride-1
cases whose outputs do not fill Winograd's 4x4 tiles, with padding on one
side only and padding wider than the kernel, and with few tiles for many filters
(Winograd by filter blocks), and with rows of 16 and more columns of 16 and 32 channels
on both sides of a padding wider than the kernel (Winograd's vector transposes); stride-1 problems with many more
output than input channels per group (planar's weight gradient by columns); groups of 16
channels at stride 1 and 2 (channels_last's full 16-lane blocks and vector transposes); many
more filters than outputs (im2col's chunks of input channels, with rows gathered and run by run);
stride-1 depthwise kernels 5 and 7 wide on rows of whole and partial groups of four outputs
(blocked's sliding row sums), stride-2 ones 3, 5 and 7 wide on rows of four outputs and more
(its stride-2 sliding sums and spreads); 1-d kernels of 2 and 3 taps at strides 1 to 3 and dilation 3, with tiles past the
output's end, stride phases without taps and one sample cut into blocks (winograd1d's phases).
"""
CASES = [
    ("2d-basic", (2, 3, 7, 9), (4, 3, 3, 3), 1, 0, 1, 1),
    ("2d-asymmetric-pad", (2, 3, 8, 6), (5, 3, 3, 2), (2, 1), ((1, 2), (0, 3)), 1, 1),
    ("2d-same-stride2", (2, 2, 9, 10), (3, 2, 3, 4), 2, "same", 1, 1),
    ("2d-same-even-kernel", (1, 2, 6, 7), (2, 2, 2, 4), 1, "same", (2, 1), 1),
    ("2d-stride-gt-kernel", (3, 2, 11, 8), (4, 2, 2, 2), 3, 1, 1, 1),
    ("2d-dilation", (2, 3, 12, 11), (2, 3, 3, 3), 1, 2, (2, 3), 1),
    ("2d-groups", (2, 4, 7, 7), (6, 2, 3, 3), (1, 2), 1, 1, 2),
    ("2d-depthwise", (2, 4, 9, 8), (4, 1, 3, 3), 1, 1, 1, 4),
    ("2d-depthwise-multiplier", (2, 3, 6, 9), (6, 1, 3, 2), 2, (1, 0), 1, 3),
    ("2d-depthwise-multiplier-same", (2, 3, 6, 9), (6, 1, 3, 3), 1, 1, 1, 3),
    ("2d-depthwise-dilated-short", (2, 3, 3, 7), (6, 1, 3, 3), 1, (2, 3), (2, 3), 3),
    ("2d-depthwise-tiny-plane", (1, 2, 1, 2), (2, 1, 3, 3), 1, 1, 1, 2),
    ("2d-depthwise-5x5", (2, 5, 9, 12), (5, 1, 5, 5), 1, 2, 1, 5),
    ("2d-depthwise-multiplier-3x7", (1, 3, 8, 13), (6, 1, 3, 7), 1, (1, 3), 1, 3),
    # stride-2 rows 3, 5 and 7 wide with four outputs or more: blocked's sliding and spreading
    ("2d-depthwise-strided-3x3", (2, 4, 9, 16), (4, 1, 3, 3), 2, 1, 1, 4),
    ("2d-depthwise-strided-5x5-multiplier", (2, 3, 12, 17), (6, 1, 5, 5), 2, 2, 1, 3),
    ("2d-depthwise-strided-7x7", (1, 4, 15, 20), (4, 1, 7, 7), 2, 3, 1, 4),
    ("2d-depthwise-dilated-wide", (1, 5, 11, 33), (5, 1, 3, 3), 1, (2, 1), (2, 1), 5),
    ("2d-1x1-strided", (2, 6, 7, 5), (5, 6, 1, 1), 2, 0, 1, 1),
    ("2d-1x1-groups", (2, 6, 17, 16), (4, 3, 1, 1), 1, 0, 1, 2),
    ("2d-1x1-wide-small-plane", (3, 8, 3, 3), (24, 4, 1, 1), 1, 0, 1, 2),   # more rows than outputs a plane
    ("2d-kernel-equals-input", (2, 3, 5, 4), (4, 3, 5, 4), 1, 0, 1, 1),
    ("2d-kernel-larger-than-input", (2, 2, 3, 3), (3, 2, 5, 5), 1, 1, 1, 1),
    ("2d-batch1-valid", (1, 5, 10, 6), (3, 5, 4, 3), (3, 2), "valid", 1, 1),
    ("2d-3x3-same-edge-tiles", (2, 5, 13, 10), (6, 5, 3, 3), 1, "same", 1, 1),
    ("2d-3x3-asymmetric-groups", (2, 4, 9, 7), (6, 2, 3, 3), 1, ((2, 0), (0, 1)), 1, 2),
    ("2d-3x3-pad-beyond-kernel", (1, 3, 5, 6), (4, 3, 3, 3), 1, 3, 1, 1),
    ("2d-3x3-many-tiles", (3, 8, 20, 17), (8, 8, 3, 3), 1, 1, 1, 1),
    ("2d-3x3-wide-few-tiles", (1, 40, 5, 6), (36, 40, 3, 3), 1, 1, 1, 1),
    ("2d-3x3-16-channel-rows", (2, 16, 6, 21), (32, 16, 3, 3), 1, ((1, 0), (3, 1)), 1, 1),   # rows of 16+ columns
    ("1d-strided-dilated", (2, 3, 13), (4, 3, 3), 2, ((2, 1),), 2, 1),
    ("1d-groups-same", (3, 6, 10), (9, 2, 4), 1, "same", 1, 3),
    ("1d-long", (1, 2, 64), (3, 2, 5), 3, 2, 1, 1),
    ("1d-3-taps-groups", (2, 6, 23), (8, 3, 3), 1, 1, 1, 2),
    ("1d-3-taps-stride2-edge", (2, 6, 23), (8, 3, 3), 2, ((2, 0),), 1, 2),
    ("1d-2-taps-stride-gt-kernel", (2, 4, 17), (3, 4, 2), 3, ((2, 1),), 1, 1),
    ("1d-2-taps-one-sample-blocks", (1, 5, 1100), (6, 5, 2), 1, ((0, 1),), 1, 1),
    ("1d-3-taps-dilated", (2, 4, 31), (6, 4, 3), 1, "same", 3, 1),
    ("3d-mixed", (2, 4, 4, 5, 6), (4, 2, 2, 3, 2), (1, 2, 1), ((1, 0), (0, 1), (1, 1)), (1, 1, 2), 2),
    ("3d-depthwise-same", (1, 3, 5, 4, 6), (3, 1, 3, 3, 3), 2, "same", 1, 3),
    ("3d-depthwise-1x3x3", (2, 4, 3, 5, 6), (4, 1, 1, 3, 3), 1, (0, 1, 1), 1, 4),
    ("3d-strided", (2, 2, 6, 6, 6), (3, 2, 3, 3, 3), 2, 1, 1, 1),
    ("2d-one-channel-dilated", (2, 1, 8, 9), (5, 1, 3, 2), 1, ((1, 0), (2, 1)), (1, 2), 1),
    ("3d-few-channels-dilated", (2, 2, 4, 5, 6), (8, 1, 2, 3, 2), 1, ((1, 0), (0, 1), (1, 1)), (2, 1, 2), 2),
    ("3d-depthwise-multiplier-stride1", (2, 3, 5, 4, 6), (6, 1, 3, 3, 3), 1, ((1, 0), (2, 1), (1, 1)), (1, 1, 2), 3),
    ("3d-3x3x3-winograd-planes", (1, 8, 8, 16, 16), (8, 8, 3, 3, 3), 1, 1, 1, 1),   # 128 tiles a depth tap
    ("2d-groups-16-lanes", (2, 32, 6, 7), (32, 16, 3, 3), 1, 1, 1, 2),   # full 16-lane blocks, 16+ outputs
    ("2d-groups-16-lanes-strided", (2, 32, 9, 8), (32, 16, 3, 3), 2, 1, 1, 2),
    ("3d-many-filters-few-outputs", (2, 4, 1, 2, 16), (24, 4, 3, 3, 3), 1, 1, 1, 1),   # rows of 16 columns
    ("3d-depth-strided-dilated", (2, 3, 7, 6, 5), (4, 3, 3, 2, 3), (2, 1, 1), ((2, 1), (0, 1), (1, 1)), (2, 1, 1), 1),
]
CASE_IDS = [case[0] for case in CASES]
