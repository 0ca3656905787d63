# The same kernels as fastrnn._recurrence (see its .pyi), compiled for x86-64-v3 (AVX2, FMA).
from fastrnn._recurrence import (CELLS as CELLS, GATES as GATES, activation as activation,
                                 backward as backward, compiled_for as compiled_for,
                                 cpu_has_avx2_fma as cpu_has_avx2_fma,
                                 cpu_has_avx512 as cpu_has_avx512, forward as forward,
                                 linear_backward as linear_backward, linear_forward as linear_forward,
                                 openmp_enabled as openmp_enabled, openmp_max_threads as openmp_max_threads,
                                 parallel_threshold as parallel_threshold,
                                 wide_kernels as wide_kernels, group_bytes as group_bytes,
                                 grad_in_place_bytes as grad_in_place_bytes,
                                 pack_lengths as pack_lengths, zero_rows as zero_rows,
                                 scatter_rows as scatter_rows)
