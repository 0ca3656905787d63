/* OpenMP stand-ins, so that the extension builds (single-threaded) with a
 * compiler that has no OpenMP.  Cython's prange already degrades to a plain
 * loop without _OPENMP; these cover the few runtime calls made directly. */
#ifndef FASTRNN_OMP_COMPAT_H
#define FASTRNN_OMP_COMPAT_H

#ifdef _OPENMP
#include <omp.h>
#define FR_HAVE_OPENMP 1
static inline int fr_omp_get_max_threads(void) { return omp_get_max_threads(); }
static inline int fr_omp_get_thread_num(void) { return omp_get_thread_num(); }
static inline int fr_omp_get_num_threads(void) { return omp_get_num_threads(); }
/* an orphaned barrier: binds to the enclosing parallel region */
static inline void fr_omp_barrier(void) { _Pragma("omp barrier") }
static inline double fr_omp_get_wtime(void) { return omp_get_wtime(); }
#else
#define FR_HAVE_OPENMP 0
static inline int fr_omp_get_max_threads(void) { return 1; }
static inline int fr_omp_get_thread_num(void) { return 0; }
static inline int fr_omp_get_num_threads(void) { return 1; }
static inline void fr_omp_barrier(void) { }
static inline double fr_omp_get_wtime(void) { return 0.0; }
#endif

#endif
