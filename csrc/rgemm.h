/* The recurrent product of one time step, C = A @ W^T, for small M.
 *
 * Each step of a recurrence multiplies the current states A (M x K: M batch
 * rows, K = hidden size) by the same weight matrix W (N x K, N = G*H).  M is
 * small (a shard of the batch), so a general BLAS call spends much of its
 * time re-packing W and in call overhead (measured here: OpenBLAS sgemm at
 * M=8, N=512, K=128 ran at 22 GFLOP/s, and 11 us per call at M=1).  Here W
 * is packed once per sequence, into panels of NR columns laid out k-major,
 * and every step only runs the register-blocked kernel over the panels.
 *
 * Every element of C is computed by the same sequence of operations,
 * acc = 0; for k in 0..K-1: acc += A[m,k] * W[n,k] (contracted to FMA where
 * the target has it), whichever kernel shape, panel group or row block it
 * falls in.  So results do not depend on how the batch is split into shards,
 * hence not on the thread count.
 *
 * Packed layout: panel p holds columns [p*NR, p*NR + NR) as K rows of NR
 * values, zero padded past N: Wp[(p*K + k)*NR + r] = W[p*NR + r, k].
 */
#ifndef FASTRNN_RGEMM_H
#define FASTRNN_RGEMM_H

#include <stddef.h>
#include <string.h>

#if defined(__GNUC__) || defined(__clang__)
#define FR_VECTOR_EXTENSIONS 1
#else
#define FR_VECTOR_EXTENSIONS 0
#endif

/* A panel row is two vector registers: 2 x 16 floats with AVX-512's 64-byte
 * registers, 2 x 8 with AVX's 32 bytes, 2 x 4 with the 16 bytes of SSE2 or
 * NEON (wider vectors there are emulated: 32-byte ones ran 40x slower,
 * measured on the x86-64 baseline build).  On Zen 4, whose FMA units are
 * 256 bits wide, the 64-byte panels still ran 1.2-1.4x faster than the
 * 32-byte ones (one core, M=64, K=512, N=2048: 86 -> 109 GFLOP/s; M=8,
 * K=128, N=512: 78 -> 108): half the instructions and loads per flop.
 * (Kernels of 8 rows measured no faster than those of 6 on Zen 4; kernels of
 * 12, which read each panel half as often, 1.1-1.2x faster on Emerald
 * Rapids: FR_WIDE.) */
#if defined(__AVX512F__)
#define FR_VECTOR_BYTES 64
#elif defined(__AVX__)
#define FR_VECTOR_BYTES 32
#else
#define FR_VECTOR_BYTES 16
#endif
#define FR_NR_F32 (2 * FR_VECTOR_BYTES / 4)
/* FR_WIDE: kernels of up to 24 accumulators where there are 32 vector
 * registers (AVX-512), measured on one core of Emerald Rapids: 12 rows of one
 * panel, the largest (M=16, K=1024, N=2048: 94 -> 114 GFLOP/s against
 * blocks of 6; M=32, K=128, N=512: 115 -> 125); 4 or 5 rows of two panels
 * (M=4-5, K=128, N=512: 1.2x against one).  Compiled in with AVX-512, used where
 * fr_wide_kernels is set: not on CPUs that run a 512-bit FMA as two 256-bit
 * halves (Zen 4), where the kernels of 6 rows already run at 92-98% of a
 * core's peak and the 12-row ones ran 1.0-1.08x slower (up to 1.3x at
 * K=1024, whose 12 rows of A, 48 KB, overflow Zen 4's 32 KB L1), the 4x2
 * ones 1.03x slower, the others no faster (one core, M=4-48, K=64-1024). */
#if defined(__AVX512F__)
#define FR_WIDE 1
#define FR_KERNEL_12(SFX) fr_kernel_##SFX##_12x1
#define FR_DEFINE_KERNEL_12(T, SFX, V, VU, NR, AT) FR_DEFINE_KERNEL(T, SFX, V, VU, NR, 12, 1, AT)
#else
#define FR_WIDE 0
#define FR_KERNEL_12(SFX) fr_kernel_##SFX##_6x1   /* never called */
#define FR_DEFINE_KERNEL_12(T, SFX, V, VU, NR, AT)
#endif
/* Set once, at import (or by a test), before any product runs. */
static int fr_wide_kernels = FR_WIDE;
/* The most bytes of packed panels a group holds (see fr_rgemm_ldp): half of
 * a core's L2, set at import; 4 panels at most. */
static size_t fr_group_bytes = 256 * 1024;
static inline ptrdiff_t fr_group_panels(size_t panel_bytes)
{
    ptrdiff_t n = (ptrdiff_t)(fr_group_bytes / panel_bytes);
    return n < 1 ? 1 : n > 4 ? 4 : n;
}
#define FR_USE_WIDE (FR_WIDE && fr_wide_kernels)
#define FR_NR_F64 (2 * FR_VECTOR_BYTES / 8)

static inline size_t fr_packed_len(ptrdiff_t N, ptrdiff_t K, ptrdiff_t nr)
{
    return (size_t)((N + nr - 1) / nr) * (size_t)nr * (size_t)K;
}

/* Panels [p0, p1) of W given as N x K rows (C = A @ W^T).  Several threads
 * may pack disjoint panel ranges of one buffer. */
#define FR_DEFINE_PACK(T, SFX, NR)                                                   \
static void fr_pack_rows_##SFX(T *Wp, const T *W, ptrdiff_t ldw, ptrdiff_t N, ptrdiff_t K,          \
                               ptrdiff_t p0, ptrdiff_t p1)                                     \
{                                                                                    \
    for (ptrdiff_t p = p0; p < p1; p++) {                                                 \
        T *dst = Wp + (size_t)p * K * NR;                                            \
        const T *src = W + (size_t)p * NR * ldw;                                     \
        ptrdiff_t nv = N - p * NR < NR ? N - p * NR : NR;                                 \
        /* k outer: NR sequential read streams, sequential writes */                 \
        for (ptrdiff_t k = 0; k < K; k++) {                                               \
            ptrdiff_t r = 0;                                                              \
            for (; r < nv; r++) dst[k * NR + r] = src[(size_t)r * ldw + k];          \
            for (; r < NR; r++) dst[k * NR + r] = 0;                                 \
        }                                                                            \
    }                                                                                \
}                                                                                    \
/* Panels [p0, p1) of S given as K x N rows (C = A @ S, i.e. W = S^T). */            \
static void fr_pack_cols_##SFX(T *Wp, const T *S, ptrdiff_t lds, ptrdiff_t N, ptrdiff_t K,          \
                               ptrdiff_t p0, ptrdiff_t p1)                                     \
{                                                                                    \
    for (ptrdiff_t p = p0; p < p1; p++) {                                                 \
        T *dst = Wp + (size_t)p * K * NR;                                            \
        ptrdiff_t n0 = p * NR, nv = N - n0 < NR ? N - n0 : NR;                            \
        for (ptrdiff_t k = 0; k < K; k++) {                                               \
            const T *src = S + (size_t)k * lds + n0;                                 \
            ptrdiff_t r = 0;                                                              \
            for (; r < nv; r++) dst[k * NR + r] = src[r];                            \
            for (; r < NR; r++) dst[k * NR + r] = 0;                                 \
        }                                                                            \
    }                                                                                \
}

FR_DEFINE_PACK(float, f32_scalar, FR_NR_F32)
FR_DEFINE_PACK(double, f64, FR_NR_F64)
#define fr_pack_cols_f32 fr_pack_cols_f32_scalar   /* already row-contiguous copies */

#if defined(__AVX__)
#include <immintrin.h>

/* Transpose the 8 x 8 block at src (row stride lds) into dst (row stride ldd). */
static inline void fr_transpose8x8_ps(float *dst, ptrdiff_t ldd, const float *src, ptrdiff_t lds)
{
    __m256 r0 = _mm256_loadu_ps(src + 0 * lds), r1 = _mm256_loadu_ps(src + 1 * lds);
    __m256 r2 = _mm256_loadu_ps(src + 2 * lds), r3 = _mm256_loadu_ps(src + 3 * lds);
    __m256 r4 = _mm256_loadu_ps(src + 4 * lds), r5 = _mm256_loadu_ps(src + 5 * lds);
    __m256 r6 = _mm256_loadu_ps(src + 6 * lds), r7 = _mm256_loadu_ps(src + 7 * lds);
    __m256 t0 = _mm256_unpacklo_ps(r0, r1), t1 = _mm256_unpackhi_ps(r0, r1);
    __m256 t2 = _mm256_unpacklo_ps(r2, r3), t3 = _mm256_unpackhi_ps(r2, r3);
    __m256 t4 = _mm256_unpacklo_ps(r4, r5), t5 = _mm256_unpackhi_ps(r4, r5);
    __m256 t6 = _mm256_unpacklo_ps(r6, r7), t7 = _mm256_unpackhi_ps(r6, r7);
    __m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44), u1 = _mm256_shuffle_ps(t0, t2, 0xEE);
    __m256 u2 = _mm256_shuffle_ps(t1, t3, 0x44), u3 = _mm256_shuffle_ps(t1, t3, 0xEE);
    __m256 u4 = _mm256_shuffle_ps(t4, t6, 0x44), u5 = _mm256_shuffle_ps(t4, t6, 0xEE);
    __m256 u6 = _mm256_shuffle_ps(t5, t7, 0x44), u7 = _mm256_shuffle_ps(t5, t7, 0xEE);
    _mm256_storeu_ps(dst + 0 * ldd, _mm256_permute2f128_ps(u0, u4, 0x20));
    _mm256_storeu_ps(dst + 1 * ldd, _mm256_permute2f128_ps(u1, u5, 0x20));
    _mm256_storeu_ps(dst + 2 * ldd, _mm256_permute2f128_ps(u2, u6, 0x20));
    _mm256_storeu_ps(dst + 3 * ldd, _mm256_permute2f128_ps(u3, u7, 0x20));
    _mm256_storeu_ps(dst + 4 * ldd, _mm256_permute2f128_ps(u0, u4, 0x31));
    _mm256_storeu_ps(dst + 5 * ldd, _mm256_permute2f128_ps(u1, u5, 0x31));
    _mm256_storeu_ps(dst + 6 * ldd, _mm256_permute2f128_ps(u2, u6, 0x31));
    _mm256_storeu_ps(dst + 7 * ldd, _mm256_permute2f128_ps(u3, u7, 0x31));
}

/* pack_rows by 8 x 8 transposes (measured: 2-3x faster than the scalar loop);
 * partial panels and the last K % 8 columns take the scalar path.  Each half
 * of a panel (16 rows of W) is packed over the whole of K before the other:
 * 16 rows read at once rather than 32, and each k's 16 values written are one
 * whole cache line rather than half of two.  Measured on Zen 5, alternating in
 * one process: a step of weights read from memory, LSTM B=1 H=1024 1.55x,
 * GRU 1.46x, RNN B=4 H=512 1.29x; the LSTM B=16 T=25 H=1024 forward 1.025x;
 * in C, packing 16 MB on one core 1.2x (8 rows at a time: 1.1x there, but
 * 0.85-0.88x the 16 rows' speed in those steps). */
static void fr_pack_rows_f32(float *Wp, const float *W, ptrdiff_t ldw, ptrdiff_t N, ptrdiff_t K, ptrdiff_t p0, ptrdiff_t p1)
{
    const ptrdiff_t K8 = K - K % 8;
    for (ptrdiff_t p = p0; p < p1; p++) {
        if (N - p * FR_NR_F32 < FR_NR_F32) {
            fr_pack_rows_f32_scalar(Wp, W, ldw, N, K, p, p + 1);
            continue;
        }
        float *dst = Wp + (size_t)p * K * FR_NR_F32;
        const float *src = W + (size_t)p * FR_NR_F32 * ldw;
        for (ptrdiff_t q0 = 0; q0 < FR_NR_F32; q0 += 16)   /* FR_NR_F32: 16 (AVX) or 32 (AVX-512) */
            for (ptrdiff_t k = 0; k < K8; k += 8)
                for (ptrdiff_t q = q0; q < q0 + 16 && q < FR_NR_F32; q += 8)   /* its columns, 8 at a time */
                    fr_transpose8x8_ps(dst + k * FR_NR_F32 + q, FR_NR_F32, src + q * ldw + k, ldw);
        for (ptrdiff_t k = K8; k < K; k++)
            for (ptrdiff_t r = 0; r < FR_NR_F32; r++) dst[k * FR_NR_F32 + r] = src[(size_t)r * ldw + k];
    }
}
/* dst (cols x rows, row stride ldd) = transpose of src (rows x cols, row stride lds) */
static void fr_transpose_f32(float *dst, ptrdiff_t ldd, const float *src, ptrdiff_t lds, ptrdiff_t rows, ptrdiff_t cols)
{
    const ptrdiff_t r8 = rows - rows % 8, c8 = cols - cols % 8;
    for (ptrdiff_t r = 0; r < r8; r += 8)
        for (ptrdiff_t c = 0; c < c8; c += 8)
            fr_transpose8x8_ps(dst + c * ldd + r, ldd, src + r * lds + c, lds);
    for (ptrdiff_t r = 0; r < rows; r++)
        for (ptrdiff_t c = (r < r8 ? c8 : 0); c < cols; c++)
            dst[c * ldd + r] = src[r * lds + c];
}
#else
#define fr_pack_rows_f32 fr_pack_rows_f32_scalar
static void fr_transpose_f32(float *dst, ptrdiff_t ldd, const float *src, ptrdiff_t lds, ptrdiff_t rows, ptrdiff_t cols)
{
    for (ptrdiff_t r = 0; r < rows; r++)
        for (ptrdiff_t c = 0; c < cols; c++) dst[c * ldd + r] = src[r * lds + c];
}
#endif

static void fr_transpose_f64(double *dst, ptrdiff_t ldd, const double *src, ptrdiff_t lds, ptrdiff_t rows, ptrdiff_t cols)
{
    for (ptrdiff_t r = 0; r < rows; r++)
        for (ptrdiff_t c = 0; c < cols; c++) dst[c * ldd + r] = src[r * lds + c];
}

/* Where A[r, k] is: A in rows lda apart (AT 0), or A^T in rows lda apart (AT 1). */
#define FR_AT(AT, r, k, lda) ((AT) ? (k) * (lda) + (r) : (r) * (lda) + (k))

/* Write (or add) a kernel's R x NR block to C, only the first ncols columns. */
#define FR_STORE_BLOCK(T, NR, tile, C, ldc, R, ncols, accumulate)                    \
    for (int r_ = 0; r_ < (R); r_++) {                                               \
        T *c_ = (C) + (size_t)r_ * (ldc);                                            \
        const T *t_ = (tile) + r_ * NR;                                              \
        if (accumulate) { for (ptrdiff_t j_ = 0; j_ < (ncols); j_++) c_[j_] += t_[j_]; }  \
        else { for (ptrdiff_t j_ = 0; j_ < (ncols); j_++) c_[j_] = t_[j_]; }              \
    }

#if FR_VECTOR_EXTENSIONS

typedef float fr_vf __attribute__((vector_size(FR_VECTOR_BYTES)));
typedef float fr_vf_u __attribute__((vector_size(FR_VECTOR_BYTES), aligned(4)));
typedef double fr_vd __attribute__((vector_size(FR_VECTOR_BYTES)));
typedef double fr_vd_u __attribute__((vector_size(FR_VECTOR_BYTES), aligned(8)));

/* Kernel of R rows x P panels: 2*R*P vector accumulators (at most 12 so that
 * they stay in the 16 registers of AVX2 with the operands; AVX-512 has 32).  Not inlined: in
 * the driver, with its neighbours, gcc spilled the accumulators to the stack
 * (measured: half speed). */
#if defined(__GNUC__) || defined(__clang__)
#define FR_NOINLINE __attribute__((noinline))
#else
#define FR_NOINLINE
#endif
#define FR_DEFINE_KERNEL(T, SFX, V, VU, NR, R, P, AT)                                \
static FR_NOINLINE void fr_kernel_##SFX##_##R##x##P(                                 \
    ptrdiff_t K, const T *A, ptrdiff_t lda, const T *Wp, T *C, ptrdiff_t ldc,                       \
    int accumulate, ptrdiff_t ncols, const T *bias)                                       \
{                                                                                    \
    V acc[R][2 * P];                                                                 \
    const size_t pstride = (size_t)K * NR;                                           \
    for (int r = 0; r < R; r++)                                                      \
        for (int v = 0; v < 2 * P; v++) acc[r][v] = (V){0};                          \
    _Pragma("GCC unroll 2")  /* measured: 86 -> 98 GFLOP/s at M=64, K=512 on Zen 3 */ \
    for (ptrdiff_t k = 0; k < K; k++) {                                                   \
        if (R >= 4) {  /* one panel: its two vectors held, each row's value broadcast */ \
            V w[2 * P];                                                              \
            if (R > 6 && P == 1) {   /* the panel's row 64 ahead, into L2: weights   \
                * larger than L2 come from L3 in the first block of rows (measured, \
                * M=16-24, K=1024, N=2048: 1.03-1.3x; nothing lost in cache) */     \
                __builtin_prefetch(Wp + (k + 64) * NR, 0, 2);                        \
                __builtin_prefetch(Wp + (k + 64) * NR + NR / 2, 0, 2);               \
            }                                                                        \
            for (int p = 0; p < P; p++) {                                            \
                w[2 * p] = *(const VU *)(Wp + p * pstride + k * NR);                 \
                w[2 * p + 1] = *(const VU *)(Wp + p * pstride + k * NR + NR / 2);    \
            }                                                                        \
            for (int r = 0; r < R; r++) {                                            \
                T a = A[FR_AT(AT, r, k, lda)];                                       \
                for (int v = 0; v < 2 * P; v++) acc[r][v] += a * w[v];               \
            }                                                                        \
        } else {       /* several panels: the rows' values held, the panels' vectors \
                        * streamed one at a time (holding all of them as well took   \
                        * more than the 16 registers: spills, half speed at M <= 3) */ \
            T a[R];                                                                  \
            for (int r = 0; r < R; r++) a[r] = A[FR_AT(AT, r, k, lda)];              \
            for (int v = 0; v < 2 * P; v++) {                                        \
                V w = *(const VU *)(Wp + (v / 2) * pstride + k * NR + (v % 2) * (NR / 2)); \
                for (int r = 0; r < R; r++) acc[r][v] += a[r] * w;                   \
            }                                                                        \
        }                                                                            \
    }                                                                                \
    if (bias) {            /* the sum first, then its bias: same order in every kernel */ \
        for (int p = 0; p < P; p++) {                                                \
            V b0 = *(const VU *)(bias + p * NR), b1 = *(const VU *)(bias + p * NR + NR / 2); \
            for (int r = 0; r < R; r++) { acc[r][2 * p] += b0; acc[r][2 * p + 1] += b1; } \
        }                                                                            \
    }                                                                                \
    for (int p = 0; p < P; p++) {                                                    \
        ptrdiff_t nc = ncols - p * NR;                                                    \
        T *cp = C + p * NR;                                                          \
        if (nc >= NR) {                                                              \
            for (int r = 0; r < R; r++) {                                            \
                VU *c0 = (VU *)(cp + r * ldc), *c1 = (VU *)(cp + r * ldc + NR / 2);  \
                if (accumulate) { *c0 += acc[r][2 * p]; *c1 += acc[r][2 * p + 1]; }  \
                else { *c0 = acc[r][2 * p]; *c1 = acc[r][2 * p + 1]; }               \
            }                                                                        \
        } else if (nc > 0) {                                                         \
            T tile[R * NR];                                                          \
            for (int r = 0; r < R; r++) {                                            \
                *(VU *)(tile + r * NR) = acc[r][2 * p];                              \
                *(VU *)(tile + r * NR + NR / 2) = acc[r][2 * p + 1];                 \
            }                                                                        \
            FR_STORE_BLOCK(T, NR, tile, cp, ldc, R, nc, accumulate)                  \
        }                                                                            \
    }                                                                                \
}

#else  /* no vector extensions (MSVC): the same arithmetic, one lane at a time */

#define FR_DEFINE_KERNEL(T, SFX, V, VU, NR, R, P, AT)                                \
static inline void fr_kernel_##SFX##_##R##x##P(                                      \
    ptrdiff_t K, const T *A, ptrdiff_t lda, const T *Wp, T *C, ptrdiff_t ldc,                       \
    int accumulate, ptrdiff_t ncols, const T *bias)                                       \
{                                                                                    \
    const size_t pstride = (size_t)K * NR;                                           \
    for (int p = 0; p < P; p++) {                                                    \
        T tile[R * NR];                                                              \
        ptrdiff_t nc = ncols - p * NR;                                                    \
        if (nc <= 0) break;                                                          \
        if (nc > NR) nc = NR;                                                        \
        for (int i = 0; i < R * NR; i++) tile[i] = 0;                                \
        for (ptrdiff_t k = 0; k < K; k++)                                                 \
            for (int r = 0; r < R; r++) {                                            \
                T a = A[FR_AT(AT, r, k, lda)];                                       \
                for (int j = 0; j < NR; j++)                                         \
                    tile[r * NR + j] += a * Wp[p * pstride + k * NR + j];            \
            }                                                                        \
        if (bias)                                                                    \
            for (int r = 0; r < R; r++)                                              \
                for (int j = 0; j < NR; j++) tile[r * NR + j] += bias[p * NR + j];   \
        FR_STORE_BLOCK(T, NR, tile, C + p * NR, ldc, R, nc, accumulate)              \
    }                                                                                \
}

#endif

/* Blocks of 12 rows (FR_USE_WIDE, then at most one of 6) or of 6 take one panel per call; the
 * 1 to 5 rows left take several panels per call, to keep enough independent
 * accumulators (8 or more) to hide the FMA latency. */
#define FR_DEFINE_KERNELS(T, SFX, V, VU, NR, AT)                                     \
FR_DEFINE_KERNEL_12(T, SFX, V, VU, NR, AT)                                           \
FR_DEFINE_KERNEL(T, SFX, V, VU, NR, 6, 1, AT)                                        \
FR_DEFINE_KERNEL(T, SFX, V, VU, NR, 5, 2, AT)                                        \
FR_DEFINE_KERNEL(T, SFX, V, VU, NR, 5, 1, AT)                                        \
FR_DEFINE_KERNEL(T, SFX, V, VU, NR, 4, 2, AT)                                        \
FR_DEFINE_KERNEL(T, SFX, V, VU, NR, 4, 1, AT)                                        \
FR_DEFINE_KERNEL(T, SFX, V, VU, NR, 3, 2, AT)                                        \
FR_DEFINE_KERNEL(T, SFX, V, VU, NR, 3, 1, AT)                                        \
FR_DEFINE_KERNEL(T, SFX, V, VU, NR, 2, 3, AT)                                        \
FR_DEFINE_KERNEL(T, SFX, V, VU, NR, 2, 2, AT)                                        \
FR_DEFINE_KERNEL(T, SFX, V, VU, NR, 2, 1, AT)                                        \
FR_DEFINE_KERNEL(T, SFX, V, VU, NR, 1, 4, AT)                                        \
FR_DEFINE_KERNEL(T, SFX, V, VU, NR, 1, 3, AT)                                        \
FR_DEFINE_KERNEL(T, SFX, V, VU, NR, 1, 2, AT)                                        \
FR_DEFINE_KERNEL(T, SFX, V, VU, NR, 1, 1, AT)                                        \
                                                                                     \
/* The last 1 to 5 rows of a product (see fr_rgemm_ldp), across all the panels. */ \
static void fr_rgemm_rows_##SFX(ptrdiff_t rest, ptrdiff_t N, ptrdiff_t K, const T *a, ptrdiff_t lda, \
                                const T *Wp, size_t pstride, T *c, ptrdiff_t ldc, int accumulate, \
                                const T *bias)                                       \
{                                                                                    \
    const ptrdiff_t np = (N + NR - 1) / NR;                                          \
    for (ptrdiff_t p = 0; p < np; ) {                                                     \
        const T *wp = Wp + p * pstride;                                              \
        T *cp = c + p * NR;                                                          \
        const T *b = bias ? bias + p * NR : bias;                                    \
        const ptrdiff_t left = np - p, nc = N - p * NR;                                   \
        if (FR_USE_WIDE && rest == 5 && left >= 2) { fr_kernel_##SFX##_5x2(K, a, lda, wp, cp, ldc, accumulate, nc, b); p += 2; } \
        else if (rest == 5) { fr_kernel_##SFX##_5x1(K, a, lda, wp, cp, ldc, accumulate, nc, b); p += 1; } \
        else if (FR_USE_WIDE && rest == 4 && left >= 2) { fr_kernel_##SFX##_4x2(K, a, lda, wp, cp, ldc, accumulate, nc, b); p += 2; } \
        else if (rest == 4) { fr_kernel_##SFX##_4x1(K, a, lda, wp, cp, ldc, accumulate, nc, b); p += 1; } \
        else if (rest == 3 && left >= 2) { fr_kernel_##SFX##_3x2(K, a, lda, wp, cp, ldc, accumulate, nc, b); p += 2; } \
        else if (rest == 3) { fr_kernel_##SFX##_3x1(K, a, lda, wp, cp, ldc, accumulate, nc, b); p += 1; } \
        else if (rest == 2 && (left >= 5 || left == 3)) { fr_kernel_##SFX##_2x3(K, a, lda, wp, cp, ldc, accumulate, nc, b); p += 3; } \
        else if (rest == 2 && left >= 2) { fr_kernel_##SFX##_2x2(K, a, lda, wp, cp, ldc, accumulate, nc, b); p += 2; } \
        else if (rest == 2) { fr_kernel_##SFX##_2x1(K, a, lda, wp, cp, ldc, accumulate, nc, b); p += 1; } \
        else if (left >= 4) { fr_kernel_##SFX##_1x4(K, a, lda, wp, cp, ldc, accumulate, nc, b); p += 4; } \
        else if (left == 3) { fr_kernel_##SFX##_1x3(K, a, lda, wp, cp, ldc, accumulate, nc, b); p += 3; } \
        else if (left == 2) { fr_kernel_##SFX##_1x2(K, a, lda, wp, cp, ldc, accumulate, nc, b); p += 2; } \
        else { fr_kernel_##SFX##_1x1(K, a, lda, wp, cp, ldc, accumulate, nc, b); p += 1; } \
    }                                                                                \
}                                                                                    \
                                                                                     \
/* C (M x N, row stride ldc) = [C +] A (M x K, row stride lda) @ W^T [+ bias],     \
 * W packed; bias (N rounded up to whole panels) or NULL.  ldp is the K extent the   \
 * panels were packed with (K itself, or more when Wp points at row k0 of panels    \
 * packed for a longer K). */                                                        \
static void fr_rgemm_ldp_##SFX(ptrdiff_t M, ptrdiff_t N, ptrdiff_t K, const T *A, ptrdiff_t lda,         \
                               const T *Wp, ptrdiff_t ldp, T *C, ptrdiff_t ldc, int accumulate, \
                               const T *bias)                                        \
{                                                                                    \
    const ptrdiff_t np = (N + NR - 1) / NR;                                          \
    /* blocks of mr rows, then at most one of 6, then the rest */                    \
    const ptrdiff_t mr = FR_USE_WIDE ? 12 : 6;                                       \
    ptrdiff_t big = M - M % mr, full = (M - big) - (M - big) % 6, rest = M % 6;      \
    const size_t pstride = (size_t)ldp * NR;                                         \
    /* one row left over after blocks of 6: the last 7 rows go as 4 + 3 instead     \
     * (the one-row kernel, a matrix-vector product, runs at half speed) */          \
    const int split7 = rest == 1 && big + full >= 6;                                 \
    if (split7 && full >= 6)                                                         \
        full -= 6;                                                                   \
    else if (split7) {                                                               \
        big -= mr; full += mr - 6;                                                   \
    }                                                                                \
    /* groups of up to 4 panels outer, so that a group's panels stay in cache \
     * for all the rows: the blocks of mr and of 6, then the rows left over    \
     * (measured on Emerald Rapids at M=16, K=1024, N=2048, where the weights  \
     * are larger than L2: 62 -> 90 GFLOP/s against a second pass over all    \
     * the panels for them); fewer where 4 would not fit in half of L2 (at     \
     * K = 4096, as the backward's dh = dG @ weight_hh of an LSTM with H=1024, \
     * a panel is 512 KB; rows that take a single pass, fewer than 6, keep   \
     * groups of 4 for the kernels of several panels) */                       \
    const ptrdiff_t GP = big + full > 0 ? fr_group_panels(pstride * sizeof(T)) : 4;  \
    for (ptrdiff_t g = 0; g < np; g += GP) {                                              \
        const ptrdiff_t gp = np - g < GP ? np - g : GP, gn = N - g * NR;                  \
        const T *wg = Wp + g * pstride, *bg = bias ? bias + g * NR : bias;           \
        for (ptrdiff_t p = 0; p < gp; p++)                                                \
            for (ptrdiff_t m = 0; m < big; m += mr)                                       \
                (mr == 12 ? FR_KERNEL_12(SFX) : fr_kernel_##SFX##_6x1)(                  \
                    K, A + FR_AT(AT, m, 0, lda), lda, wg + p * pstride, C + m * ldc + (g + p) * NR, \
                    ldc, accumulate, gn - p * NR, bg ? bg + p * NR : bg);                \
        for (ptrdiff_t m = big; m < big + full; m += 6)                                   \
            for (ptrdiff_t p = 0; p < gp; p++)                                            \
                fr_kernel_##SFX##_6x1(K, A + FR_AT(AT, m, 0, lda), lda, wg + p * pstride, \
                                      C + m * ldc + (g + p) * NR, ldc, accumulate,   \
                                      gn - p * NR, bg ? bg + p * NR : bg);           \
        const ptrdiff_t n_g = gn < gp * NR ? gn : gp * NR;                                \
        if (split7) {                                                                \
            fr_rgemm_rows_##SFX(4, n_g, K, A + FR_AT(AT, big + full, 0, lda), lda, wg, pstride, C + (big + full) * ldc + g * NR, \
                                ldc, accumulate, bg);                                \
            fr_rgemm_rows_##SFX(3, n_g, K, A + FR_AT(AT, big + full + 4, 0, lda), lda, wg, pstride, \
                                C + (big + full + 4) * ldc + g * NR, ldc, accumulate, bg); \
        } else if (rest > 0) {                                                       \
            fr_rgemm_rows_##SFX(rest, n_g, K, A + FR_AT(AT, big + full, 0, lda), lda, wg, pstride, C + (big + full) * ldc + g * NR, \
                                ldc, accumulate, bg);                                \
        }                                                                            \
    }                                                                                \
}                                                                                    \
static inline void fr_rgemm_##SFX(ptrdiff_t M, ptrdiff_t N, ptrdiff_t K, const T *A, ptrdiff_t lda,      \
                                  const T *Wp, T *C, ptrdiff_t ldc, int accumulate,       \
                                  const T *bias)                                     \
{                                                                                    \
    fr_rgemm_ldp_##SFX(M, N, K, A, lda, Wp, K, C, ldc, accumulate, bias);            \
}                                                                                    \
/* The same product, its groups of 4 panels taken last first: the same          \
 * operations for every element of C, in another order over the panels. */        \
static void fr_rgemm_reversed_##SFX(ptrdiff_t M, ptrdiff_t N, ptrdiff_t K, const T *A, ptrdiff_t lda, \
                                    const T *Wp, T *C, ptrdiff_t ldc, int accumulate, \
                                    const T *bias)                                   \
{                                                                                    \
    const ptrdiff_t np = (N + NR - 1) / NR;                                          \
    for (ptrdiff_t g = (np - 1) / 4 * 4; g >= 0; g -= 4)                             \
        fr_rgemm_ldp_##SFX(M, N - g * NR < 4 * NR ? N - g * NR : 4 * NR, K, A, lda, Wp + (size_t)g * K * NR, K, \
                           C + g * NR, ldc, accumulate, bias ? bias + g * NR : bias); \
}

/* fr_rgemm_f32t and the other ..t products read A transposed: A[m, k] at
 * A[k * lda + m], the K x M matrix A^T in rows lda apart (the weight
 * gradients' dG^T, read in dG itself rather than transposed into scratch
 * first).  The same operations in the same order: the same bits. */
#if FR_VECTOR_EXTENSIONS
FR_DEFINE_KERNELS(float, f32, fr_vf, fr_vf_u, FR_NR_F32, 0)
FR_DEFINE_KERNELS(double, f64, fr_vd, fr_vd_u, FR_NR_F64, 0)
FR_DEFINE_KERNELS(float, f32t, fr_vf, fr_vf_u, FR_NR_F32, 1)
FR_DEFINE_KERNELS(double, f64t, fr_vd, fr_vd_u, FR_NR_F64, 1)
#else
FR_DEFINE_KERNELS(float, f32, float, float, FR_NR_F32, 0)
FR_DEFINE_KERNELS(double, f64, double, double, FR_NR_F64, 0)
FR_DEFINE_KERNELS(float, f32t, float, float, FR_NR_F32, 1)
FR_DEFINE_KERNELS(double, f64t, double, double, FR_NR_F64, 1)
#endif

/* A single step's product for a few rows, read straight from the rows of W:
 * C (M x NR) [+]= A (M x K) @ W[0:nv].T [+ bias] for one panel, the rows of W
 * past nv taken as zeros, M <= FR_ROW_PRODUCT_ROWS.  W's rows are transposed
 * in registers, a vector of k at a time, and each row of A takes them k after
 * k: every element of C gets the operations of the kernels on the packed
 * panel (acc += a * w from k = 0, then the bias, then into C), in the same
 * order, so the same bits; but W is read once, where packing it for one step
 * reads it, writes the panel and reads that back.  Each half of the panel
 * (FR_RV rows of W: 16 with AVX-512, 8 with AVX2) over all of K, then the other, as fr_pack_rows_f32 does: in
 * one pass over both halves, 32 rows read at once, it lost to packing.
 * Measured on Zen 5, a step against packing, alternating in one process:
 * B=1: RNN H=1024 1.24x, LSTM H=128 1.27x, H=512 1.14-1.28x, H=1024 (from
 * memory) 1.29x, GRU H=256 1.10x, LSTM H=64 0.96-1.03x; B=2: RNN H=1024 1.24x,
 * LSTM H=512 1.08x.  Rows 3 and 4 run slower a row than 1 and 2 (in C, one
 * core, 4 MB of W: 9.6 and 11 floats of W a ns against 14-15), and in the
 * layers B=3 read 0.90-0.99x, B=4 1.04-1.43x: FR_ROW_PRODUCT_ROWS is 2. */
#if FR_VECTOR_EXTENSIONS && (defined(__AVX512F__) || defined(__AVX__))
#define FR_ROW_PRODUCT_ROWS 2
#if defined(__AVX512F__)
#define FR_RV 16   /* floats in a vector */
/* r[i] = row i of a 16 x 16 block -> r[j] = its column j */
static inline void fr_transpose_regs(__m512 r[16])
{
    __m512 t[16];
    for (int i = 0; i < 16; i += 2) {
        t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
        t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
    }
    for (int i = 0; i < 16; i += 4) {
        __m512d a = _mm512_castps_pd(t[i]), b = _mm512_castps_pd(t[i + 1]);
        __m512d c = _mm512_castps_pd(t[i + 2]), d = _mm512_castps_pd(t[i + 3]);
        r[i] = _mm512_castpd_ps(_mm512_unpacklo_pd(a, c));
        r[i + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a, c));
        r[i + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(b, d));
        r[i + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(b, d));
    }
    /* r[4q + j], 128-bit lane l: column 4l + j of rows 4q .. 4q + 3 */
    for (int j = 0; j < 4; j++) {
        t[j] = _mm512_shuffle_f32x4(r[j], r[4 + j], 0x88);
        t[4 + j] = _mm512_shuffle_f32x4(r[j], r[4 + j], 0xdd);
        t[8 + j] = _mm512_shuffle_f32x4(r[8 + j], r[12 + j], 0x88);
        t[12 + j] = _mm512_shuffle_f32x4(r[8 + j], r[12 + j], 0xdd);
    }
    for (int j = 0; j < 4; j++) {
        r[j] = _mm512_shuffle_f32x4(t[j], t[8 + j], 0x88);
        r[8 + j] = _mm512_shuffle_f32x4(t[j], t[8 + j], 0xdd);
        r[4 + j] = _mm512_shuffle_f32x4(t[4 + j], t[12 + j], 0x88);
        r[12 + j] = _mm512_shuffle_f32x4(t[4 + j], t[12 + j], 0xdd);
    }
}
typedef __m512 fr_rv;
#define FR_RV_LOAD _mm512_loadu_ps
#define FR_RV_ZERO _mm512_setzero_ps
#else
#define FR_RV 8
static inline void fr_transpose_regs(__m256 r[8])
{
    __m256 t[8], u[8];
    for (int i = 0; i < 8; i += 2) {
        t[i] = _mm256_unpacklo_ps(r[i], r[i + 1]);
        t[i + 1] = _mm256_unpackhi_ps(r[i], r[i + 1]);
    }
    for (int i = 0; i < 8; i += 4) {
        u[i] = _mm256_shuffle_ps(t[i], t[i + 2], 0x44);
        u[i + 1] = _mm256_shuffle_ps(t[i], t[i + 2], 0xEE);
        u[i + 2] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0x44);
        u[i + 3] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0xEE);
    }
    for (int j = 0; j < 4; j++) {
        r[j] = _mm256_permute2f128_ps(u[j], u[4 + j], 0x20);
        r[4 + j] = _mm256_permute2f128_ps(u[j], u[4 + j], 0x31);
    }
}
typedef __m256 fr_rv;
#define FR_RV_LOAD _mm256_loadu_ps
#define FR_RV_ZERO _mm256_setzero_ps
#endif
#if FR_NR_F32 != 2 * FR_RV
#error "a panel is two vectors"
#endif
static inline __attribute__((always_inline)) void fr_row_product_rows(
    const int M, ptrdiff_t K, const float *A, ptrdiff_t lda, const float *W, ptrdiff_t ldw, ptrdiff_t nv,
    float *C, ptrdiff_t ldc, int accumulate, const float *bias)
{
    const ptrdiff_t kv = K - K % FR_RV;
    for (int h = 0; h < 2; h++) {   /* the panel's two halves: columns [0, FR_RV), [FR_RV, 2 FR_RV) */
        const float *Wh = W + h * FR_RV * ldw;
        const ptrdiff_t nh = nv - h * FR_RV;   /* rows of W in this half */
        fr_vf acc[FR_ROW_PRODUCT_ROWS];
        fr_rv t[FR_RV];
        for (int r = 0; r < M; r++) acc[r] = (fr_vf){0};
        for (ptrdiff_t k = 0; k < kv; k += FR_RV) {
            for (int i = 0; i < FR_RV; i++) t[i] = i < nh ? FR_RV_LOAD(Wh + i * ldw + k) : FR_RV_ZERO();
            fr_transpose_regs(t);
            for (int j = 0; j < FR_RV; j++)
                for (int r = 0; r < M; r++) acc[r] += A[r * lda + k + j] * (fr_vf)t[j];
        }
        for (ptrdiff_t k = kv; k < K; k++) {
            float w[FR_RV];
            for (int i = 0; i < FR_RV; i++) w[i] = i < nh ? Wh[i * ldw + k] : 0;
            for (int r = 0; r < M; r++) acc[r] += A[r * lda + k] * *(const fr_vf_u *)w;
        }
        for (int r = 0; r < M; r++) {
            if (bias) acc[r] += *(const fr_vf_u *)(bias + h * FR_RV);
            fr_vf_u *c = (fr_vf_u *)(C + r * ldc + h * FR_RV);
            if (accumulate) *c += acc[r];
            else *c = acc[r];
        }
    }
}
static void fr_row_product_f32(ptrdiff_t M, ptrdiff_t K, const float *A, ptrdiff_t lda, const float *W,
                               ptrdiff_t ldw, ptrdiff_t nv, float *C, ptrdiff_t ldc, int accumulate,
                               const float *bias)
{
    if (M == 1)   /* the rows a constant in each copy: the accumulators in registers */
        fr_row_product_rows(1, K, A, lda, W, ldw, nv, C, ldc, accumulate, bias);
    else
        fr_row_product_rows(2, K, A, lda, W, ldw, nv, C, ldc, accumulate, bias);
}
#else
#define FR_ROW_PRODUCT_ROWS 0
static void fr_row_product_f32(ptrdiff_t M, ptrdiff_t K, const float *A, ptrdiff_t lda, const float *W,
                               ptrdiff_t ldw, ptrdiff_t nv, float *C, ptrdiff_t ldc, int accumulate,
                               const float *bias)
{   /* never called: FR_ROW_PRODUCT_ROWS is 0 */
    (void)M; (void)K; (void)A; (void)lda; (void)W; (void)ldw; (void)nv; (void)C; (void)ldc; (void)accumulate; (void)bias;
}
#endif

/* A product with few rows from a matrix read in place by rows: C (M x n) [+]=
 * A (M x K) @ S[0:K, 0:n], S of row stride lds, M <= FR_COLS_PRODUCT_ROWS.
 * Packing S by columns (fr_pack_cols) copies 32 values of each of its rows
 * into a panel; here each panel's two vectors are read from S's row k itself
 * (the last, partial panel through a copy padded with zeros, as packing pads
 * it), and every element of C gets the kernels' operations in their order,
 * so the same bits.  For the backward's dx and dh of a single step of one or
 * two rows (and Linear's dx), which packed weight_ih and weight_hh whole
 * (16 MB each for an LSTM at H=1024) to read the copy once.  Two panels at a
 * time: at one row, one panel's two chains of FMAs wait on their latency
 * (with one: RNN H=1024 0.98-0.99x).  Measured on Zen 5, a cell's training
 * step and its backward against the build before, processes alternating: B=1
 * LSTM H=1024 1.43x, GRU 1.30x, RNN 1.29x; GRU H=512 1.71x; LSTM H=64-128
 * 1.05-1.07x; B=2 RNN H=1024 1.30x, LSTM H=512 1.18x, RNN H=128 1.32x. */
#if FR_VECTOR_EXTENSIONS
#define FR_COLS_PRODUCT_ROWS 2
static inline __attribute__((always_inline)) void fr_cols_product_block(
    const int M, const int P, ptrdiff_t nc, ptrdiff_t K, const float *A, ptrdiff_t lda, const float *S,
    ptrdiff_t lds, float *C, ptrdiff_t ldc, int accumulate)
{   /* columns [0, nc) of S, nc <= P * FR_NR_F32: P panels, the last one padded */
    const int V = FR_NR_F32 / 2;   /* floats in a vector */
    fr_vf acc[FR_COLS_PRODUCT_ROWS][4];
    for (int r = 0; r < M; r++)
        for (int v = 0; v < 2 * P; v++) acc[r][v] = (fr_vf){0};
    for (ptrdiff_t k = 0; k < K; k++) {
        float pad[2 * FR_NR_F32];
        const float *w = S + k * lds;
        if (nc < P * FR_NR_F32) {
            for (int i = 0; i < P * FR_NR_F32; i++) pad[i] = i < nc ? w[i] : 0;
            w = pad;
        }
        fr_vf wv[4];
        for (int v = 0; v < 2 * P; v++) wv[v] = *(const fr_vf_u *)(w + v * V);
        for (int r = 0; r < M; r++) {
            float a = A[r * lda + k];
            for (int v = 0; v < 2 * P; v++) acc[r][v] += a * wv[v];
        }
    }
    for (int r = 0; r < M; r++) {
        float t[2 * FR_NR_F32], *c = C + r * ldc;
        for (int v = 0; v < 2 * P; v++) *(fr_vf_u *)(t + v * V) = acc[r][v];
        if (accumulate) { for (ptrdiff_t i = 0; i < nc; i++) c[i] += t[i]; }
        else { for (ptrdiff_t i = 0; i < nc; i++) c[i] = t[i]; }
    }
}
static inline __attribute__((always_inline)) void fr_cols_product_rows(
    const int M, ptrdiff_t n, ptrdiff_t K, const float *A, ptrdiff_t lda, const float *S, ptrdiff_t lds,
    float *C, ptrdiff_t ldc, int accumulate)
{   /* two panels at a time: four vectors of sums a row, where one panel's two
     * wait on the latency of their FMAs at one row */
    ptrdiff_t j = 0;
    for (; j + 2 * FR_NR_F32 <= n; j += 2 * FR_NR_F32)
        fr_cols_product_block(M, 2, 2 * FR_NR_F32, K, A, lda, S + j, lds, C + j, ldc, accumulate);
    for (; j < n; j += FR_NR_F32)
        fr_cols_product_block(M, 1, n - j < FR_NR_F32 ? n - j : FR_NR_F32, K, A, lda, S + j, lds, C + j, ldc,
                              accumulate);
}
static void fr_cols_product_f32(ptrdiff_t M, ptrdiff_t n, ptrdiff_t K, const float *A, ptrdiff_t lda,
                                const float *S, ptrdiff_t lds, float *C, ptrdiff_t ldc, int accumulate)
{
    if (M == 1)   /* the rows a constant in each copy: the accumulators in registers */
        fr_cols_product_rows(1, n, K, A, lda, S, lds, C, ldc, accumulate);
    else
        fr_cols_product_rows(2, n, K, A, lda, S, lds, C, ldc, accumulate);
}
#else
#define FR_COLS_PRODUCT_ROWS 0
static void fr_cols_product_f32(ptrdiff_t M, ptrdiff_t n, ptrdiff_t K, const float *A, ptrdiff_t lda,
                                const float *S, ptrdiff_t lds, float *C, ptrdiff_t ldc, int accumulate)
{   /* never called: FR_COLS_PRODUCT_ROWS is 0 */
    (void)M; (void)n; (void)K; (void)A; (void)lda; (void)S; (void)lds; (void)C; (void)ldc; (void)accumulate;
}
#endif

#endif
