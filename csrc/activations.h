/* Activations for the pointwise passes of the recurrent cells.
 *
 * The float versions use no libm call, only arithmetic, comparisons and bit
 * operations, so that gcc/clang vectorise the loops that call them (compile
 * with -fno-trapping-math so that the selects can be if-converted).  Accuracy
 * against the float64 functions, held by tests/test_activations.py: sigmoid
 * within 2 ulp (measured 1.24), tanh within 8e-8 absolute and 1.4e-7 relative
 * (measured 7.6e-8 and 1.36e-7).  NaN propagates; +-inf and large inputs
 * saturate without producing inf/NaN, and no result is a subnormal number
 * (those are slow on most CPUs): far below zero, sigmoid stops at
 * exp(-87) = 1.6e-38.  Measured per element in a vectorised loop: sigmoid
 * 0.49 ns, tanh 0.74 ns on AVX2 (Zen 3); 1.60 and 2.47 ns on Zen 1, whose
 * 128-bit units take two operations for each 256-bit one.
 *
 * The double versions call libm: float64 is the precision used for checking,
 * so it gets the correctly rounded functions rather than speed.
 *
 * Derivatives are taken from the outputs: sigmoid' = s (1 - s),
 * tanh' = 1 - t^2, relu' = (y > 0).
 */
#ifndef FASTRNN_ACTIVATIONS_H
#define FASTRNN_ACTIVATIONS_H

#include <math.h>
#include <stdint.h>

/* 2^n p(r) for x = n ln2 + r, |r| <= ln2/2; the caller keeps x in [-87, 88],
 * where both the result and 2^n are normal numbers.
 *
 * What bounds the loops that call this is the chain of dependent operations,
 * not their number: on a CPU with a small out-of-order window (Zen 1), the
 * loop runs at the rate at which whole chains fit in it.  So p has degree 6,
 * not Cephes's 7 (its own error, 0.03 ulp, is far below the rounding's), and
 * is evaluated in Estrin's scheme rather than Horner's.  Measured on Zen 1, per
 * element of a vectorised loop: this exp 1.1 ns against 1.65 with Cephes's
 * polynomial in Horner's scheme. */
static inline float fr_exp_core(float x)
{
    union { float f; int32_t i; } nm, scale;
    float n, r, r2, p;
    /* round x/ln2 to an integer with the 1.5 * 2^23 trick: n lands in the low
     * bits of nm's mantissa, so 2^n needs no float-to-int conversion */
    nm.f = x * 1.44269504088896341f + 12582912.0f;
    n = nm.f - 12582912.0f;
    r = x - n * 0.693359375f;             /* ln2 split in two for an exact product */
    r = r - n * -2.12194440e-4f;
    r2 = r * r;
    /* minimax for the relative error on |r| <= ln2/2:
     * 1 + r + r^2 (c0 + c1 r + c2 r^2 + c3 r^3 + c4 r^4) */
    p = (4.9999994040e-01f + 1.6666521132e-01f * r)
        + r2 * ((4.1668388993e-02f + 8.3687100559e-03f * r) + r2 * 1.3814612757e-03f);
    p = p * r2 + r + 1.0f;
    scale.i = (nm.i - 0x4B400000 + 127) << 23;
    return p * scale.f;
}

static inline float fr_sigmoidf(float x)
{
    /* 1 / (1 + exp(-x)) directly: for x < 0 the large exp(-x) loses nothing
     * in the sum (measured: relative error at most 1.24 ulp of 2^-23), and
     * without the select of the form e / (1 + e), e = exp(-|x|), it takes
     * 0.49 ns per element against 0.55.  -x is kept
     * in [-87, 87], so that far below zero the result stops at exp(-87), a
     * normal number; comparisons are false for NaN, which passes. */
    float a = -x;
    a = a > 87.0f ? 87.0f : a;
    a = a < -87.0f ? -87.0f : a;
    return 1.0f / (1.0f + fr_exp_core(a));
}

static inline float fr_tanhf(float x)
{
    float ax = fabsf(x), z = x * x, p, small, big, e;
    /* |x| < 0.625: odd polynomial (Cephes tanhf), no cancellation near 0 */
    p = -5.70498872745e-3f;
    p = p * z + 2.06390887954e-2f;
    p = p * z - 5.37397155531e-2f;
    p = p * z + 1.33314422036e-1f;
    p = p * z - 3.33332819422e-1f;
    small = x + x * z * p;
    /* otherwise 1 - 2 / (exp(2|x|) + 1) with the sign of x */
    e = 2.0f * ax;
    e = e > 88.0f ? 88.0f : e;
    big = copysignf(1.0f - 2.0f / (fr_exp_core(e) + 1.0f), x);
    return ax < 0.625f ? small : big;
}

static inline float fr_reluf(float x) { return x > 0.0f ? x : (x == x ? 0.0f : x); }

static inline double fr_sigmoid(double x)
{
    double e = exp(x < 0.0 ? x : -x);
    double s = 1.0 / (1.0 + e);
    return x < 0.0 ? e * s : s;
}

static inline double fr_tanh(double x) { return tanh(x); }

static inline double fr_relu(double x) { return x > 0.0 ? x : (x == x ? 0.0 : x); }

#endif
