"""The CUDA algorithms (numba.cuda.jit kernels); imported only when a GPU is used."""
