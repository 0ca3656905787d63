/* A sense-reversing spin barrier for the threads of one OpenMP region.
 *
 * The time loop needs every thread's new state before the next step starts:
 * one barrier per step.  An OpenMP barrier costs about 310 ns on the 2-core
 * machine this was measured on, this one about 46 ns.  After a few thousand
 * spins a waiting thread yields the CPU, in case the one it waits for has been
 * descheduled.
 *
 * Memory order: everything a thread wrote before it arrives is visible to
 * every thread after it leaves (release on arrival, acquire on departure).
 */
#ifndef FASTRNN_BARRIER_H
#define FASTRNN_BARRIER_H

#include <stddef.h>

#include "omp_compat.h"

#if defined(__GNUC__) || defined(__clang__)

#if defined(__x86_64__) || defined(__i386__)
#define FR_CPU_RELAX() __builtin_ia32_pause()
#elif defined(__aarch64__)
#define FR_CPU_RELAX() __asm__ __volatile__("yield")
#else
#define FR_CPU_RELAX() ((void)0)
#endif

#if defined(_WIN32)
#include <windows.h>
#define FR_YIELD() SwitchToThread()
#else
#include <sched.h>
#define FR_YIELD() sched_yield()
#endif

/* Every thread writes it at every step: a cache line of its own (unaligned,
 * it would straddle two, shared with whatever locals of the caller's stack
 * frame lie beside it). */
typedef struct {
    int count;      /* threads arrived in this round */
    int sense;      /* flips each round */
    int n;          /* threads in the team */
    char pad[64 - 3 * sizeof(int)];
} __attribute__((aligned(64))) fr_barrier;

static inline void fr_barrier_init(fr_barrier *b, int n)
{
    b->count = 0;
    b->sense = 0;
    b->n = n;
}

static inline void fr_barrier_wait(fr_barrier *b, int *local_sense)
{
    int sense = !*local_sense;
    *local_sense = sense;
    if (b->n <= 1)
        return;
    if (__atomic_add_fetch(&b->count, 1, __ATOMIC_ACQ_REL) == b->n) {
        __atomic_store_n(&b->count, 0, __ATOMIC_RELAXED);
        __atomic_store_n(&b->sense, sense, __ATOMIC_RELEASE);
    } else {
        unsigned spins = 0;
        while (__atomic_load_n(&b->sense, __ATOMIC_ACQUIRE) != sense) {
            if (++spins < 4096)
                FR_CPU_RELAX();
            else
                FR_YIELD();
        }
    }
}

/* A flag that one thread raises and the others poll, without waiting for
 * one another (threads sharing the rows learn this way that Ctrl-C stopped
 * the call). */
static inline void fr_flag_raise(int *flag) { __atomic_store_n(flag, 1, __ATOMIC_RELAXED); }
static inline int fr_flag_raised(const int *flag) { return __atomic_load_n(flag, __ATOMIC_RELAXED); }

/* The counter's value, incremented: threads taking tiles of work in turn. */
static inline ptrdiff_t fr_take_next(ptrdiff_t *counter) { return __atomic_fetch_add(counter, 1, __ATOMIC_RELAXED); }

#else  /* other compilers: the OpenMP barrier */

typedef struct { int n; } fr_barrier;
static inline void fr_barrier_init(fr_barrier *b, int n) { b->n = n; }
static inline void fr_barrier_wait(fr_barrier *b, int *local_sense)
{
    (void)local_sense;
    if (b->n > 1)
        fr_omp_barrier();
}
static inline void fr_flag_raise(int *flag) { *(volatile int *)flag = 1; }
static inline int fr_flag_raised(const int *flag) { return *(const volatile int *)flag; }
static inline ptrdiff_t fr_take_next(ptrdiff_t *counter)
{
    ptrdiff_t value;
#pragma omp atomic capture
    value = (*counter)++;
    return value;
}

#endif
#endif
