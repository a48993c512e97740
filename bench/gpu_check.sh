#!/usr/bin/env bash
# On a machine with an NVIDIA GPU (numba, numba-cuda and PyTorch installed, e.g. pip install -e ".[cuda,test]"
# with a CUDA build of PyTorch): the CUDA tests in hardware (numbaconv.torch's on CUDA tensors among them),
# then numbaconv CUDA vs PyTorch cuDNN timings.
# Extra arguments go to bench/gpu_check.py (--repeats, --warmup, --algo).
set -euo pipefail
cd "$(dirname "$0")/.."
unset NUMBA_ENABLE_CUDASIM
python -c "from numba import cuda; import sys; sys.exit(0 if cuda.is_available() else 'gpu_check: numba.cuda finds no GPU')"
python -m pytest -q tests/test_cuda.py tests/test_torch_cuda.py
python bench/gpu_check.py "$@"
