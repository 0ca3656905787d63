/* Activations for the pointwise passes of the recurrent cells.
 *
 * The float versions use no libm call, only arithmetic and comparisons, so
 * that gcc/clang vectorise the loops that call them (compile with
 * -fno-trapping-math so that the selects can be if-converted).  Accuracy
 * against the float64 functions: exp within 1.5 ulp, tanh within 7.2e-8
 * absolute, sigmoid within a few 1e-8 relative.  NaN propagates; +-inf and
 * large inputs saturate to the exact limits without producing inf/NaN, and
 * no result is a subnormal number (those are slow on most CPUs).
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

/* exp(x) for x in [-87, 88] (clamped outside; both ends stay normal). */
static inline float fr_expf(float x)
{
    union { int32_t i; float f; } scale;
    float n, r, p;
    x = x > 88.0f ? 88.0f : x;            /* compares are false for NaN: NaN passes */
    x = x < -87.0f ? -87.0f : x;
    /* x = n ln2 + r, |r| <= ln2/2; round to nearest with the 1.5 * 2^23 trick */
    n = x * 1.44269504088896341f + 12582912.0f;
    n = n - 12582912.0f;
    r = x - n * 0.693359375f;             /* ln2 split in two for an exact product */
    r = r - n * -2.12194440e-4f;
    p = 1.9875691500e-4f;                 /* Cephes expf minimax polynomial */
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    scale.i = ((int32_t)n + 127) << 23;   /* 2^n */
    return p * scale.f;
}

static inline float fr_sigmoidf(float x)
{
    /* e = exp(-|x|) <= 1 keeps both branches accurate and free of overflow */
    float e = fr_expf(x < 0.0f ? x : -x);
    float s = 1.0f / (1.0f + e);
    return x < 0.0f ? e * s : s;
}

static inline float fr_tanhf(float x)
{
    float ax = x < 0.0f ? -x : x;
    float z = x * x, p, small, big;
    /* |x| < 0.625: odd polynomial (Cephes tanhf), no cancellation near 0 */
    p = -5.70498872745e-3f;
    p = p * z + 2.06390887954e-2f;
    p = p * z - 5.37397155531e-2f;
    p = p * z + 1.33314422036e-1f;
    p = p * z - 3.33332819422e-1f;
    small = x + x * z * p;
    /* otherwise 1 - 2 / (exp(2|x|) + 1) with the sign of x */
    big = 1.0f - 2.0f / (fr_expf(2.0f * ax) + 1.0f);
    big = x < 0.0f ? -big : big;
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
