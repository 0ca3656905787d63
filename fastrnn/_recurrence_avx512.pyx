# The kernels of _recurrence.pyx again, compiled for x86-64-v4 (AVX-512 F, BW,
# CD, DQ, VL): only in a portable build (FASTRNN_ARCH=portable, as the wheels
# are made), beside the builds for any x86-64 CPU and for x86-64-v3.
# fastrnn._kernels imports this one where the CPU runs it.
include "_recurrence.pyx"
