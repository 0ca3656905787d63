/* What the CPU can run, asked at run time: a portable build (a wheel) carries
 * the kernels three times, for any x86-64 CPU, for x86-64-v3 (AVX2, FMA) and
 * for x86-64-v4 (AVX-512 F, BW, CD, DQ, VL), and fastrnn._kernels imports the
 * widest one the CPU (and the OS, which must save the vector registers) runs.
 * fr_cpu_avx512_half_width: whether the CPU runs AVX-512 on 256-bit units, a
 * 512-bit operation in two halves (AMD family 0x19, Zen 4): rgemm.h then
 * keeps to its kernels of 6 rows (fr_wide_kernels). */
#ifndef FASTRNN_CPU_H
#define FASTRNN_CPU_H

#if defined(_MSC_VER) && !defined(__clang__) && (defined(_M_X64) || defined(_M_IX86))
#include <intrin.h>
#include <immintrin.h>
static inline int fr_cpu_has_avx2_fma(void) {
    int r[4];
    __cpuid(r, 0);
    if (r[0] < 7) return 0;
    __cpuid(r, 1);
    /* FMA, OSXSAVE and AVX, and the OS saving the ymm registers */
    if (!((r[2] >> 12) & 1) || !((r[2] >> 27) & 1) || !((r[2] >> 28) & 1)) return 0;
    if ((_xgetbv(0) & 6) != 6) return 0;
    __cpuidex(r, 7, 0);
    return (r[1] >> 5) & 1;
}
static inline int fr_cpu_has_avx512(void) {
    int r[4];
    if (!fr_cpu_has_avx2_fma()) return 0;
    /* the OS saving the opmask and zmm registers too */
    if ((_xgetbv(0) & 0xe6) != 0xe6) return 0;
    __cpuidex(r, 7, 0);
    /* F (16), DQ (17), CD (28), BW (30), VL (31) */
    return ((unsigned)r[1] & 0xd0030000u) == 0xd0030000u;
}
static inline int fr_cpu_avx512_half_width(void) {
    int r[4], family;
    __cpuid(r, 0);
    if (!(r[1] == 0x68747541 && r[3] == 0x69746e65 && r[2] == 0x444d4163)) return 0;  /* "AuthenticAMD" */
    __cpuid(r, 1);
    family = ((r[0] >> 8) & 0xf) + ((r[0] >> 20) & 0xff);
    return family == 0x19;
}
#elif (defined(__GNUC__) || defined(__clang__)) && (defined(__x86_64__) || defined(__i386__))
#include <cpuid.h>
static inline int fr_cpu_has_avx2_fma(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
}
/* (gcc's and clang's checks include the OS's saving of the registers) */
static inline int fr_cpu_has_avx512(void) {
    __builtin_cpu_init();
    return fr_cpu_has_avx2_fma() && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw")
        && __builtin_cpu_supports("avx512cd") && __builtin_cpu_supports("avx512dq")
        && __builtin_cpu_supports("avx512vl");
}
static inline int fr_cpu_avx512_half_width(void) {
    unsigned a, b, c, d, family;
    if (!__get_cpuid(0, &a, &b, &c, &d) || !(b == 0x68747541 && d == 0x69746e65 && c == 0x444d4163))
        return 0;   /* not "AuthenticAMD" */
    __get_cpuid(1, &a, &b, &c, &d);
    family = ((a >> 8) & 0xf) + ((a >> 20) & 0xff);
    return family == 0x19;
}
#else
static inline int fr_cpu_has_avx2_fma(void) { return 0; }
static inline int fr_cpu_has_avx512(void) { return 0; }
static inline int fr_cpu_avx512_half_width(void) { return 0; }
#endif

/* A core's L2 cache in bytes as the C library reports it (glibc reads
 * cpuid); 0 where it is not known. */
#if defined(__linux__) && defined(__GLIBC__)
#include <unistd.h>
static inline long fr_l2_cache_bytes(void) {
#ifdef _SC_LEVEL2_CACHE_SIZE
    long n = sysconf(_SC_LEVEL2_CACHE_SIZE);
    return n > 0 ? n : 0;
#else
    return 0;
#endif
}
#else
static inline long fr_l2_cache_bytes(void) { return 0; }
#endif

/* The instruction sets this module was compiled for (its -march). */
static inline const char *fr_compiled_for(void) {
#if defined(__AVX512F__)
    return "avx512f avx2 fma";
#elif defined(__AVX2__) && defined(__FMA__)
    return "avx2 fma";
#elif defined(__AVX__)
    return "avx";
#elif defined(__x86_64__) || defined(_M_X64)
    return "x86-64 baseline (sse2)";
#elif defined(__aarch64__) || defined(_M_ARM64)
    return "aarch64 (neon)";
#else
    return "generic";
#endif
}

#endif
