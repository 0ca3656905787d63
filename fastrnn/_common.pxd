# Shared by the compiled modules: the fused precision type, the C helpers of
# csrc/ and thin typed wrappers over them.  Everything here is inline and
# nogil; nothing here allocates or raises.
from cython cimport floating


cdef extern from "activations.h" nogil:
    float fr_sigmoidf(float x)
    float fr_tanhf(float x)
    float fr_reluf(float x)
    double fr_sigmoid(double x)
    double fr_tanh(double x)
    double fr_relu(double x)


cdef extern from "rgemm.h" nogil:
    enum:
        FR_NR_F32
        FR_NR_F64
    size_t fr_packed_len(Py_ssize_t N, Py_ssize_t K, Py_ssize_t nr)
    void fr_pack_rows_f32(float *Wp, const float *W, Py_ssize_t ldw, Py_ssize_t N, Py_ssize_t K, Py_ssize_t p0, Py_ssize_t p1)
    void fr_pack_rows_f64(double *Wp, const double *W, Py_ssize_t ldw, Py_ssize_t N, Py_ssize_t K, Py_ssize_t p0, Py_ssize_t p1)
    void fr_pack_cols_f32(float *Wp, const float *S, Py_ssize_t lds, Py_ssize_t N, Py_ssize_t K, Py_ssize_t p0, Py_ssize_t p1)
    void fr_pack_cols_f64(double *Wp, const double *S, Py_ssize_t lds, Py_ssize_t N, Py_ssize_t K, Py_ssize_t p0, Py_ssize_t p1)
    void fr_rgemm_f32(Py_ssize_t M, Py_ssize_t N, Py_ssize_t K, const float *A, Py_ssize_t lda,
                      const float *Wp, float *C, Py_ssize_t ldc, int accumulate, const float *bias)
    void fr_rgemm_f64(Py_ssize_t M, Py_ssize_t N, Py_ssize_t K, const double *A, Py_ssize_t lda,
                      const double *Wp, double *C, Py_ssize_t ldc, int accumulate, const double *bias)
    void fr_rgemm_reversed_f32(Py_ssize_t M, Py_ssize_t N, Py_ssize_t K, const float *A, Py_ssize_t lda,
                               const float *Wp, float *C, Py_ssize_t ldc, int accumulate, const float *bias)
    void fr_rgemm_reversed_f64(Py_ssize_t M, Py_ssize_t N, Py_ssize_t K, const double *A, Py_ssize_t lda,
                               const double *Wp, double *C, Py_ssize_t ldc, int accumulate, const double *bias)
    void fr_rgemm_ldp_f32(Py_ssize_t M, Py_ssize_t N, Py_ssize_t K, const float *A, Py_ssize_t lda, const float *Wp, Py_ssize_t ldp,
                          float *C, Py_ssize_t ldc, int accumulate, const float *bias)
    void fr_rgemm_ldp_f64(Py_ssize_t M, Py_ssize_t N, Py_ssize_t K, const double *A, Py_ssize_t lda, const double *Wp, Py_ssize_t ldp,
                          double *C, Py_ssize_t ldc, int accumulate, const double *bias)
    void fr_rgemm_f32t(Py_ssize_t M, Py_ssize_t N, Py_ssize_t K, const float *At, Py_ssize_t ldat,
                       const float *Wp, float *C, Py_ssize_t ldc, int accumulate, const float *bias)
    void fr_rgemm_f64t(Py_ssize_t M, Py_ssize_t N, Py_ssize_t K, const double *At, Py_ssize_t ldat,
                       const double *Wp, double *C, Py_ssize_t ldc, int accumulate, const double *bias)
    void fr_transpose_f32(float *dst, Py_ssize_t ldd, const float *src, Py_ssize_t lds, Py_ssize_t rows, Py_ssize_t cols)
    void fr_transpose_f64(double *dst, Py_ssize_t ldd, const double *src, Py_ssize_t lds, Py_ssize_t rows, Py_ssize_t cols)
    enum:
        FR_ROW_PRODUCT_ROWS
        FR_COLS_PRODUCT_ROWS
    void fr_cols_product_f32(Py_ssize_t M, Py_ssize_t n, Py_ssize_t K, const float *A, Py_ssize_t lda,
                             const float *S, Py_ssize_t lds, float *C, Py_ssize_t ldc, int accumulate)
    void fr_row_product_f32(Py_ssize_t M, Py_ssize_t K, const float *A, Py_ssize_t lda, const float *W,
                            Py_ssize_t ldw, Py_ssize_t nv, float *C, Py_ssize_t ldc, int accumulate,
                            const float *bias)
    enum:
        FR_WIDE
    int fr_wide_kernels
    size_t fr_group_bytes


cdef extern from "omp_compat.h" nogil:
    enum:
        FR_HAVE_OPENMP
    int fr_omp_get_max_threads()
    int fr_omp_get_thread_num()
    int fr_omp_get_num_threads()
    void fr_omp_barrier()
    double fr_omp_get_wtime()


cdef extern from "cpu.h" nogil:
    int fr_cpu_has_avx2_fma()
    int fr_cpu_has_avx512()
    int fr_cpu_avx512_half_width()
    long fr_l2_cache_bytes()
    const char *fr_compiled_for()


cdef extern from "barrier.h" nogil:
    ctypedef struct fr_barrier:
        pass
    void fr_barrier_init(fr_barrier *b, int n)
    void fr_barrier_wait(fr_barrier *b, int *local_sense)
    void fr_flag_raise(int *flag)
    int fr_flag_raised(const int *flag)
    Py_ssize_t fr_take_next(Py_ssize_t *counter)


cdef inline floating sigmoid(floating x) noexcept nogil:
    if floating is float:
        return fr_sigmoidf(x)
    else:
        return fr_sigmoid(x)


cdef inline floating tanh(floating x) noexcept nogil:
    if floating is float:
        return fr_tanhf(x)
    else:
        return fr_tanh(x)


cdef inline floating relu(floating x) noexcept nogil:
    if floating is float:
        return fr_reluf(x)
    else:
        return fr_relu(x)


cdef inline Py_ssize_t panel_width(floating dummy) noexcept nogil:
    """Columns per panel of a packed matrix (two SIMD vectors)."""
    if floating is float:
        return FR_NR_F32
    else:
        return FR_NR_F64


cdef inline void pack_rows(floating *packed, const floating *w, Py_ssize_t ldw,
                           Py_ssize_t n, Py_ssize_t k, Py_ssize_t p0, Py_ssize_t p1) noexcept nogil:
    """Panels [p0, p1) of w (n x k) for products A @ w.T."""
    if floating is float:
        fr_pack_rows_f32(packed, w, ldw, n, k, p0, p1)
    else:
        fr_pack_rows_f64(packed, w, ldw, n, k, p0, p1)


cdef inline void pack_cols(floating *packed, const floating *s, Py_ssize_t lds,
                           Py_ssize_t n, Py_ssize_t k, Py_ssize_t p0, Py_ssize_t p1) noexcept nogil:
    """Panels [p0, p1) of s (k x n) for products A @ s."""
    if floating is float:
        fr_pack_cols_f32(packed, s, lds, n, k, p0, p1)
    else:
        fr_pack_cols_f64(packed, s, lds, n, k, p0, p1)


cdef inline void rgemm(Py_ssize_t m, Py_ssize_t n, Py_ssize_t k,
                       const floating *a, Py_ssize_t lda, const floating *packed,
                       floating *c, Py_ssize_t ldc, bint accumulate,
                       const floating *bias=NULL, bint reversed=False) noexcept nogil:
    """c (m x n) = [c +] a (m x k) @ w.T [+ bias] with w packed by
    pack_rows/pack_cols; bias (n rounded up to whole panels) or NULL.
    reversed: the panels in groups of 4, last first (the same results)."""
    if floating is float:
        if reversed:
            fr_rgemm_reversed_f32(m, n, k, a, lda, packed, c, ldc, accumulate, bias)
        else:
            fr_rgemm_f32(m, n, k, a, lda, packed, c, ldc, accumulate, bias)
    else:
        if reversed:
            fr_rgemm_reversed_f64(m, n, k, a, lda, packed, c, ldc, accumulate, bias)
        else:
            fr_rgemm_f64(m, n, k, a, lda, packed, c, ldc, accumulate, bias)


cdef inline void rgemm_at(Py_ssize_t m, Py_ssize_t n, Py_ssize_t k,
                          const floating *at, Py_ssize_t ldat, const floating *packed,
                          floating *c, Py_ssize_t ldc, bint accumulate) noexcept nogil:
    """c (m x n) = [c +] at.T @ w.T, at (k x m) in rows ldat apart: rgemm
    of a = at.T, read in place (the same bits as rgemm of a copy of at.T)."""
    if floating is float:
        fr_rgemm_f32t(m, n, k, at, ldat, packed, c, ldc, accumulate, NULL)
    else:
        fr_rgemm_f64t(m, n, k, at, ldat, packed, c, ldc, accumulate, NULL)


cdef inline void transpose(floating *dst, Py_ssize_t ldd, const floating *src, Py_ssize_t lds,
                           Py_ssize_t rows, Py_ssize_t cols) noexcept nogil:
    """dst (cols x rows) = src (rows x cols).T"""
    if floating is float:
        fr_transpose_f32(dst, ldd, src, lds, rows, cols)
    else:
        fr_transpose_f64(dst, ldd, src, lds, rows, cols)
