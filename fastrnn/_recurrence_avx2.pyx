# The kernels of _recurrence.pyx again, compiled for x86-64-v3 (AVX2, FMA):
# only in a portable build (FASTRNN_ARCH=portable, as the wheels are made),
# whose _recurrence is compiled for any x86-64 CPU.  fastrnn._kernels
# imports this one where the CPU runs it and not _recurrence_avx512.
include "_recurrence.pyx"
