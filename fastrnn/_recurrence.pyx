# The recurrence over a whole sequence, for one layer and one direction, of any
# cell: `forward` and its backpropagation through time, `backward`.
#
# Data layout: a packed ragged batch, as PyTorch's PackedSequence.  The B
# sequences are sorted by length, longest first; at time t the first
# batch_sizes[t] of them are active, and row j of time t is stored at
# offsets[t] + j.  N = sum(lengths) rows in all: padded steps take no memory
# and no compute.  A batch without `lengths` is the special case
# batch_sizes = [B] * T, where the packed rows are the (T, B, .) array itself.
#
# Forward, per (layer, direction), for a chunk of steps at a time:
#   1. xw = x @ weight_ih.T + biases            for all the chunk's rows at once
#   2. for each step s of the chunk (the sequential part):
#        xw += h @ weight_hh.T                  on the rows still running (the
#                                               GRU's n gate: into hw instead)
#        the cell's pointwise step, each row    _cells.pxd
# Backward walks the steps in reverse (dh = dhw @ weight_hh per step), then
# forms dx, dweight_ih, dweight_hh and the bias gradients as products over
# all N rows (the RNN's dweight_hh block by block of steps: see pack_prev).
#
# Every matrix product is the packed kernel of csrc/rgemm.h: weights packed
# once per call into panels, a register-blocked kernel over them.  (BLAS was
# the first design; measured here, the packed kernel matched or beat
# single-threaded OpenBLAS at every shape of these loops, and needs none of the
# thread juggling that calling a pthread BLAS from OpenMP threads does.)
#
# Threads: a team shares either the rows or the hidden units of the batch
# (share_rows).  Sharing the rows (at least 4 each, weight_hh small enough for
# a core's cache; a block of consecutive rows each, see thread_rows), each
# thread runs its rows through every step with all the units, projecting its
# own rows of x too: the threads meet once, when the weights are packed.
# Sharing the units (whole panels each), every thread computes its units'
# gates for every row, so each product keeps all the batch's rows and each
# thread reads only its share of the weights (what large weights and small
# batches need); a spin barrier (csrc/barrier.h) ends each step.  The
# products over all rows of the backward are cut into tiles of output rows,
# which the threads take in turn.  Every output element of a product is
# computed by the same sequence of operations whichever thread, tile or
# kernel shape it falls in, so results are bitwise identical for any
# number of threads and either way of sharing.
#
# The Python wrappers validate nothing: fastrnn.layers does that, and
# allocates every output.  They take scratch before the GIL is released;
# nothing below them raises or allocates.
import threading

import numpy as np
from cpython.exc cimport PyErr_CheckSignals
from cython.parallel cimport parallel, prange
from libc.string cimport memcpy, memset

from fastrnn._common cimport (
    floating, sigmoid, tanh, relu, rgemm, rgemm_at, transpose, pack_rows, pack_cols, panel_width, fr_packed_len,
    FR_HAVE_OPENMP, FR_WIDE, FR_ROW_PRODUCT_ROWS, fr_row_product_f32, FR_COLS_PRODUCT_ROWS, fr_cols_product_f32,
    fr_wide_kernels, fr_group_bytes, fr_cpu_has_avx2_fma, fr_cpu_has_avx512,
    fr_cpu_avx512_half_width, fr_l2_cache_bytes, fr_compiled_for, fr_omp_get_max_threads, fr_omp_get_thread_num,
    fr_omp_get_num_threads, fr_omp_barrier, fr_omp_get_wtime, fr_barrier, fr_barrier_init, fr_barrier_wait,
    fr_flag_raise, fr_flag_raised, fr_take_next)
from fastrnn._cells cimport (
    rnn_forward_step, rnn_backward_step, lstm_forward_step, lstm_backward_step,
    gru_forward_step, gru_backward_step, gru_reset_before_reset_step, gru_reset_before_forward_step,
    gru_reset_before_backward_step, gru_reset_before_reset_backward_step)


cdef enum:
    RNN_TANH = 0
    RNN_RELU = 1
    LSTM = 2
    GRU = 3
    GRU_RESET_BEFORE = 4    # Keras's reset_after=False, ONNX's linear_before_reset=0

CELLS = {"RNN_TANH": RNN_TANH, "RNN_RELU": RNN_RELU, "LSTM": LSTM, "GRU": GRU,
         "GRU_RESET_BEFORE": GRU_RESET_BEFORE}
GATES = {RNN_TANH: 1, RNN_RELU: 1, LSTM: 4, GRU: 3, GRU_RESET_BEFORE: 3}

# Below this many flops (about 0.2 ms on one core) a loop runs on one thread.
# Waking a second thread costs a few microseconds when it is still spinning
# from the previous call, but milliseconds after the process has been idle
# (measured on a 2-vCPU VM: 6-8 ms for the first parallel region after 50 ms
# idle), which small calls, typically made one per request, cannot afford.
cdef double MIN_PARALLEL_FLOPS = 2e7


def parallel_threshold(flops=None):
    """The work (flops) below which a loop runs on one thread; sets it when
    given (tests set 0 to run every parallel path on small problems).
    Returns the previous value."""
    global MIN_PARALLEL_FLOPS
    previous = MIN_PARALLEL_FLOPS
    if flops is not None:
        MIN_PARALLEL_FLOPS = float(flops)
    return previous


# The kernels of 12 rows and the other wide ones of csrc/rgemm.h, where this
# build has them (AVX-512) and the CPU runs 512-bit FMAs at full width.
fr_wide_kernels = FR_WIDE and not fr_cpu_avx512_half_width()


def wide_kernels(on=None):
    """Whether the products use the wide kernels (csrc/rgemm.h: 12-row
    blocks, two panels for 4-5 rows, eight for one); sets it when given and
    this build has them (tests run both sets).  Returns the previous value."""
    global fr_wide_kernels
    previous = bool(fr_wide_kernels)
    if on is not None:
        fr_wide_kernels = bool(on) and FR_WIDE
    return previous


def cpu_has_avx2_fma():
    """Whether this CPU runs AVX2 and FMA code (fastrnn._kernels asks)."""
    return bool(fr_cpu_has_avx2_fma())


def cpu_has_avx512():
    """Whether this CPU runs x86-64-v4 code: AVX-512 F, BW, CD, DQ, VL."""
    return bool(fr_cpu_has_avx512())


def compiled_for():
    """The instruction sets this module was compiled for."""
    return fr_compiled_for().decode()


def openmp_enabled():
    """Whether the extension was compiled with OpenMP."""
    return bool(FR_HAVE_OPENMP)


def openmp_max_threads():
    return fr_omp_get_max_threads()


def activation(str name, floating[::1] x, floating[::1] out):
    """out = name(x) with the kernels' own activation functions (for tests)."""
    cdef Py_ssize_t i, n = x.shape[0]
    cdef int which = ("sigmoid", "tanh", "relu").index(name)
    with nogil:
        for i in range(n):
            out[i] = sigmoid(x[i]) if which == 0 else (tanh(x[i]) if which == 1 else relu(x[i]))


# --- geometry of a packed batch ---------------------------------------------

cdef struct Steps:
    Py_ssize_t n_steps                 # the longest length
    const Py_ssize_t *batch_sizes      # (n_steps,) active rows at each time
    const Py_ssize_t *offsets          # (n_steps,) first packed row of each time
    const Py_ssize_t *lengths          # (B,) per row, non-increasing
    bint reverse


cdef inline Py_ssize_t row_at(const Steps *steps, Py_ssize_t s, Py_ssize_t j) noexcept nogil:
    """Packed row of batch row j at its s-th step: time s, or in reverse
    time lengths[j] - 1 - s (each sequence starts from its own end)."""
    if steps.reverse:
        return steps.offsets[steps.lengths[j] - 1 - s] + j
    return steps.offsets[s] + j


cdef bint rows_within(const Py_ssize_t[::1] rows, Py_ssize_t n) noexcept:
    """Whether every entry of rows is a valid row index below n."""
    cdef Py_ssize_t i
    for i in range(rows.shape[0]):
        if rows[i] < 0 or rows[i] >= n:
            return False
    return True


cdef int check_batch_sizes(const Py_ssize_t[::1] batch_sizes, Py_ssize_t B) except -1:
    """A packed batch's batch_sizes must start at B and never grow (the loops
    index by them)."""
    cdef Py_ssize_t s
    if batch_sizes.shape[0] == 0 or batch_sizes[0] != B:
        raise ValueError("batch_sizes must start with the batch size")
    for s in range(1, batch_sizes.shape[0]):
        if batch_sizes[s] < 1 or batch_sizes[s] > batch_sizes[s - 1]:
            raise ValueError("batch_sizes must be positive and non-increasing")
    return 0


def pack_lengths(const Py_ssize_t[::1] lengths, Py_ssize_t T):
    """The packing of a padded (T, B, .) batch whose sequences have these
    lengths (each in [1, T]: the caller checks), as fastrnn.layers.Packing
    keeps it: (order, batch_sizes, rows_tb, rows_bt, pad_rows_tb), or None
    when every length is T.  order (B,): the sequences longest first, ties
    in batch order; batch_sizes (S,): sequences running at each time;
    rows_tb, rows_bt (N,): the row of each packed row in a time-major
    (T*B, .) and a batch-major (B*T, .) array; pad_rows_tb (T*B - N,): the
    time-major rows past their sequence's end.  In C rather than some ten
    NumPy calls (measured: 30 us of a ragged forward's 400 at B=32, T=100)."""
    cdef Py_ssize_t B = lengths.shape[0], S = 0, N = 0, b, t, j, r = 0, k = 0
    for b in range(B):
        S = max(S, lengths[b])
        N += lengths[b]
    if N == T * B:
        return None
    order_a = np.empty(B, dtype=np.intp)
    above_a = np.empty(T + 1, dtype=np.intp)
    start_a = np.zeros(T + 1, dtype=np.intp)
    tb_a = np.empty(N, dtype=np.intp)
    bt_a = np.empty(N, dtype=np.intp)
    pad_a = np.empty(T * B - N, dtype=np.intp)
    cdef Py_ssize_t[::1] order = order_a, above = above_a, start = start_a, tb = tb_a, bt = bt_a, pad = pad_a
    # a counting sort, longest first: above[t], the number of lengths above
    # t, is the batch size at time t and where the sequences of length t start
    for b in range(B):
        start[lengths[b]] += 1
    above[T] = 0
    for t in range(T - 1, -1, -1):
        above[t] = above[t + 1] + start[t + 1]
    start[:] = above
    for b in range(B):
        order[start[lengths[b]]] = b
        start[lengths[b]] += 1
    for t in range(T):
        if t < S:
            for j in range(above[t]):
                tb[r] = t * B + order[j]
                bt[r] = order[j] * T + t
                r += 1
        for j in range(above[t], B):
            pad[k] = t * B + order[j]
            k += 1
    return order_a, above_a[:S], tb_a, bt_a, pad_a


def zero_rows(floating[:, ::1] a, const Py_ssize_t[::1] rows):
    """a[rows] = 0, rows checked by the caller (Packing's pad_rows_tb):
    zeroing only the rows a kernel does not write (a ragged batch's padding)
    rather than all of them first."""
    cdef Py_ssize_t i
    cdef size_t row_bytes = a.shape[1] * sizeof(floating)
    with nogil:
        for i in range(rows.shape[0]):
            memset(&a[rows[i], 0], 0, row_bytes)


def scatter_rows(floating[:, ::1] out, const Py_ssize_t[::1] rows, const floating[:, ::1] a):
    """out[rows] = a, rows checked by the caller (Packing's rows_tb): NumPy's
    fancy assignment took 38 us for 2000 rows of 128 floats, this 25."""
    cdef Py_ssize_t i
    cdef size_t row_bytes = a.shape[1] * sizeof(floating)
    with nogil:
        for i in range(rows.shape[0]):
            memcpy(&out[rows[i], 0], &a[i, 0], row_bytes)


# --- scratch -------------------------------------------------------------------
# The kernels' scratch (packed weights, per-step buffers) comes from one buffer
# per Python thread, kept between calls: allocating tens of megabytes afresh
# each call costs page faults (measured: 5% of a wide LSTM forward).  One per
# thread, so that calls from several threads never share it.

_local = threading.local()


cdef class Scratch:
    """Carves 64-byte aligned pieces out of the calling thread's buffer.  A
    later Scratch of the same thread reuses the same memory: take one only
    once the previous one's pieces are no longer used."""
    cdef object buffer     # keeps the memory alive even if a later Scratch replaces it
    cdef char *base
    cdef Py_ssize_t used, size

    def __cinit__(self, Py_ssize_t nbytes):
        # (buffer, its address): ctypes.data takes a microsecond or two, so it
        # is kept; one attribute, set once both are known, so that a
        # KeyboardInterrupt raised in between cannot leave one without the other
        kept = getattr(_local, "scratch", None)
        if kept is None or kept[0].nbytes < nbytes + 64:
            buffer = np.empty(nbytes + 64, dtype=np.uint8)
            kept = (buffer, buffer.ctypes.data)
            _local.scratch = kept
        self.buffer = kept[0]
        cdef Py_ssize_t address = kept[1]
        self.base = <char *>(address + (64 - address % 64) % 64)
        self.size = nbytes
        self.used = 0

    cdef void *take(self, Py_ssize_t nbytes) noexcept:
        cdef void *p = self.base + self.used
        self.used += (nbytes + 63) // 64 * 64
        return p


cdef inline Py_ssize_t padded(Py_ssize_t nbytes) noexcept nogil:
    return (nbytes + 63) // 64 * 64


cdef Steps make_steps(const Py_ssize_t[::1] batch_sizes, Py_ssize_t B, bint reverse, Scratch scratch) noexcept:
    """The geometry struct the loops read, its offsets (S,) and lengths (B,)
    taken from scratch (it has room for them: steps_bytes) rather than NumPy
    arrays, which cost microseconds that a short sequence notices."""
    cdef Steps steps
    cdef Py_ssize_t S = batch_sizes.shape[0], s, j, total = 0, next_size
    cdef Py_ssize_t *offsets = <Py_ssize_t *>scratch.take(S * sizeof(Py_ssize_t))
    cdef Py_ssize_t *lengths = <Py_ssize_t *>scratch.take(B * sizeof(Py_ssize_t))
    for s in range(S):
        offsets[s] = total
        total += batch_sizes[s]
        # rows [batch_sizes[s + 1], batch_sizes[s]) end after step s
        next_size = batch_sizes[s + 1] if s + 1 < S else 0
        for j in range(next_size, batch_sizes[s]):
            lengths[j] = s + 1
    steps.n_steps = S
    steps.batch_sizes = &batch_sizes[0]
    steps.offsets = offsets
    steps.lengths = lengths
    steps.reverse = reverse
    return steps


cdef inline Py_ssize_t steps_bytes(Py_ssize_t S, Py_ssize_t B) noexcept:
    """Scratch make_steps takes."""
    return padded(S * sizeof(Py_ssize_t)) + padded(B * sizeof(Py_ssize_t))


# --- how a team of threads shares the work of a step -------------------------

cdef struct Split:
    Py_ssize_t u0, u1      # the thread's units [u0, u1)
    Py_ssize_t p0          # its first panel of each gate (panels of nr units)
    Py_ssize_t width       # its gate stride in the packed layout: whole panels
    Py_ssize_t col         # its first column in arrays of the packed layout


cdef inline Split split_units(Py_ssize_t H, Py_ssize_t G, Py_ssize_t nr, int t, int nt) noexcept nogil:
    """Thread t's share of the H units: whole panels of nr units, the panels
    of each gate cut into nt consecutive runs.  In the packed layout (width
    G * P * nr, P = panels per gate), thread t's columns are its gates one
    after the other, each `width` wide."""
    cdef Split sp
    cdef Py_ssize_t P = (H + nr - 1) // nr, p1
    sp.p0 = t * P // nt
    p1 = (t + 1) * P // nt
    sp.u0 = min(sp.p0 * nr, H)
    sp.u1 = min(p1 * nr, H)
    sp.width = (p1 - sp.p0) * nr
    sp.col = G * sp.p0 * nr
    return sp


# Small problems in a loop.  An OpenMP worker keeps spinning for a few
# milliseconds after a parallel region while the calling thread stays busy
# (measured: 3-10 ms), and a new region then starts in about a microsecond.
# So a call that comes less than WARM_SECONDS after the previous one ended
# uses the threads down to MIN_WARM_FLOPS_PER_STEP of work per step (below
# that, the barrier of every step costs more than the split saves: measured
# on the Emerald Rapids VM, forward, T=100, 2 threads against 1: 0.69-0.96x
# at 49K-66K flops per step (GRU and LSTM at B=1, H=64; RNN at B=4, H=64),
# 0.96-1.25x at 131K, 1.1-1.6x from 200K up; raising the bound from 4e4 made
# the stream-size GRU and LSTM 1.2-1.6x faster).
cdef double WARM_SECONDS = 2e-3
cdef double MIN_WARM_FLOPS_PER_STEP = 1e5
cdef double _last_call_end = -1.0


# How a team shares a time loop.  By rows when each thread gets at least
# ROWS_PER_THREAD rows: each thread then runs its rows through every step with
# all the units, no barrier between steps and no state crossing between cores,
# but reads all of the packed weight_hh at every step.  Measured, 2 threads,
# forward: 12-14% faster at B=32, H=128 and 31-37% at B=8 than sharing the
# units (Zen 3).  So the units are shared where weight_hh is larger than a
# core's L2 and the rows are few: each thread then reads only its share at
# every step, from L2 where the share fits, and from L3 otherwise, where
# sharing the rows would have both cores stream all of it (twice the traffic,
# for half the rows per thread).  Measured on Zen 3 (512 KB L2), in one
# process against sharing the rows: LSTM at B=16, H=1024 (16 MB of weights)
# forward 1.18-1.24x, forward+backward 1.18x; GRU there 1.22x and 1.01x; on a
# Sapphire Rapids VM (2 MB L2) 1.30-1.38x forward.  With ROWS_BEYOND_L2 rows
# each, enough work a step for every weight streamed from L3, the rows are
# shared anyway: on that VM, B=64, H=512 (3-4 MB of weights), GRU and LSTM
# forward 1.03-1.16x, forward+backward 1.04-1.07x against sharing the units
# (Zen 3 had measured 0.95-1.14x there, Zen 4 0.94-1.10x, while the threads
# took every other row rather than a block, see thread_rows).  But not in
# an eval-mode forward, which shares the units wherever weight_hh is larger
# than L2: measured on the Zen 5 VM (1 MB L2), alternating in one process,
# forwards against sharing the rows: LSTM H=512 at B=64 0.99-1.06x (1.04x
# the median of five runs), B=128 1.02-1.04x, B=256 1.05x; LSTM H=1024,
# B=64 1.05x; GRU H=512, B=64 0.98-1.04x (1.00x).  A training forward there
# kept the rows (sharing the units 0.99x: sharing the rows, it writes the
# gates in place, see `direct`), and so did the backward (0.94-1.02x).
cdef Py_ssize_t ROWS_PER_THREAD = 4
cdef Py_ssize_t ROWS_BEYOND_L2 = 32
cdef Py_ssize_t L2_BYTES = fr_l2_cache_bytes() or 512 * 1024   # unknown: Zen 3's
fr_group_bytes = L2_BYTES // 2   # a product's group of panels stays in L2 (csrc/rgemm.h)


def group_bytes(nbytes=None):
    """The most bytes of packed panels in a group of a product (csrc/rgemm.h:
    half of L2); sets it when given (tests vary it: the results do not
    depend on it).  Returns the previous value."""
    global fr_group_bytes
    previous = fr_group_bytes
    if nbytes is not None:
        fr_group_bytes = max(1, int(nbytes))
    return previous


cdef bint share_rows(int nt, Py_ssize_t B, Py_ssize_t packed_hh_bytes, bint inference) noexcept:
    return nt > 1 and B >= ROWS_PER_THREAD * nt and (
        packed_hh_bytes <= L2_BYTES or not inference and B >= ROWS_BEYOND_L2 * nt)


# A thread's rows of the batch, sharing the rows: a block of consecutive
# rows [j0, j1), the blocks split where their sequences hold about as many
# steps each (a ragged batch, longest sequences first, gives fewer rows to
# the first thread).  Blocks, not every other row: measured on a Sapphire
# Rapids VM, 2 threads, a C model of the RNN's step loop at B=32, H=128
# 1.09-1.17x faster; the layers, side by side, forwards 1.02-1.35x at B=8
# and B=32, forward+backward 1.09-1.19x, the RNN at B=64, H=512 1.12-1.16x,
# a ragged batch at B=32 1.13-1.39x (the LSTM forward 0.90-1.04x).
# (The likely cause: the cores' prefetchers fetch whole neighbourhoods of a
# row, so each core pulled in the rows the other one writes.)
cdef struct Rows:
    Py_ssize_t j0, j1


cdef inline Py_ssize_t row_split(const Steps *steps, Py_ssize_t B, Py_ssize_t N, int t, int nt) noexcept nogil:
    """The first row whose rows before it hold at least t / nt of the N steps."""
    cdef Py_ssize_t j = 0, done = 0
    while j < B and done * nt < t * N:
        done += steps.lengths[j]
        j += 1
    return j


cdef inline Rows thread_rows(bint by_rows, const Steps *steps, int tid, int nt, Py_ssize_t B) noexcept nogil:
    cdef Rows rows
    cdef Py_ssize_t N = steps.offsets[steps.n_steps - 1] + steps.batch_sizes[steps.n_steps - 1]
    rows.j0, rows.j1 = 0, B
    if by_rows:
        rows.j0, rows.j1 = row_split(steps, B, N, tid, nt), row_split(steps, B, N, tid + 1, nt)
    return rows


cdef inline Py_ssize_t own_rows(Py_ssize_t rows, const Rows *mine) noexcept nogil:
    """How many of a thread's rows are below `rows`."""
    cdef Py_ssize_t end = rows if rows < mine.j1 else mine.j1
    return end - mine.j0 if end > mine.j0 else 0


cdef inline bint warm() noexcept:
    """Whether the last call ended less than WARM_SECONDS ago (its OpenMP
    workers still spinning)."""
    return _last_call_end >= 0 and fr_omp_get_wtime() - _last_call_end < WARM_SECONDS


cdef int team_size(double flops, double flops_per_step, int n_threads, Py_ssize_t H, Py_ssize_t nr,
                   Py_ssize_t B, Py_ssize_t packed_hh_bytes, bint inference):
    """Threads for a time loop: at most one per panel of units (or per
    ROWS_PER_THREAD rows when they share the rows); one for small work,
    unless it comes in a loop (see WARM_SECONDS); one where the threads
    would share the units of steps under MIN_WARM_FLOPS_PER_STEP, however
    long the sequence (measured on the Zen 5 VM, B=1, H=64, T=2000,
    forward+backward against the threads sharing every step of the backward,
    alternating in one process: LSTM 1.43-1.49x, GRU 1.59-1.69x faster in
    spells where a barrier took about 200 ns, 0.98x and 1.09x in a faster
    one; the forward projects ahead there instead, see project_ahead).
    Tests lower MIN_PARALLEL_FLOPS to 0 to run every way of sharing at small
    sizes."""
    cdef Py_ssize_t panels = (H + nr - 1) // nr
    cdef int n = n_threads if n_threads < panels else <int>panels
    cdef bint rows = share_rows(n_threads, B, packed_hh_bytes, inference)
    if rows:
        n = min(n_threads, B // ROWS_PER_THREAD)
    if n < 1 or (flops < MIN_PARALLEL_FLOPS and not (warm() and flops_per_step >= MIN_WARM_FLOPS_PER_STEP)):
        n = 1
    elif not rows and flops_per_step < min(MIN_WARM_FLOPS_PER_STEP, MIN_PARALLEL_FLOPS):
        n = 1   # however long the sequence, threads meeting after every step lose at this size
    return n


cdef void call_ended() noexcept:
    global _last_call_end
    _last_call_end = fr_omp_get_wtime()


# The products over all rows (a backward's dx and weight gradients, a linear
# layer's) share their tiles between the threads from MIN_PARALLEL_FLOPS, or,
# when the workers still spin (warm: a backward just after its forward, in a
# training loop), from MIN_WARM_PRODUCT_FLOPS: a tile of the 12-row kernel
# and its share of the packing cost about a microsecond each at that size.
cdef double MIN_WARM_PRODUCT_FLOPS = 1e6


cdef inline double product_min_flops() noexcept:
    """Below how many flops a product over all rows runs on one thread."""
    return min(MIN_PARALLEL_FLOPS, MIN_WARM_PRODUCT_FLOPS) if warm() else MIN_PARALLEL_FLOPS


# Rows of x projected at once: a bound on the scratch (an eval-mode forward
# allocates nothing proportional to T), large enough for an efficient product.
cdef Py_ssize_t CHUNK_ROWS = 256


# Projecting ahead.  Where steps are too small to split (see above), a second
# thread still has work: the input product of the next chunk of steps, while
# the first thread runs the steps of this one, from the other of two buffers.
# The threads meet once a chunk rather than once a step, so their meetings
# cost little even when the two vCPUs sit far apart (measured on the Zen 5 VM:
# a barrier took 30-50 ns in some spells, 200 ns in others, and a forward
# whose threads shared the units of every step at B=1, H=64 then ran at
# 0.8 us a step against 0.37 on one thread).  Chunks of AHEAD_ROWS rows (two
# blocks of the 12-row kernel); both threads project the first one, half of
# the panels each.  Measured there, forwards at T=100 against one thread
# (the sharing of every step, at T=2000), processes alternating: B=1, H=64
# LSTM 64 -> 53 us, GRU 46 -> 39, RNN 23.5 -> 22; B=4, LSTM H=32 60 -> 47,
# RNN H=64 48 -> 35; B=1, H=64 LSTM at T=2000 850-900 -> 800-840.  The same
# bits: every element of a product is computed alike whichever block of
# rows or panels it falls in.  Not below MIN_AHEAD_FLOPS of input product,
# where waking the second thread and the meetings would cost about what
# the product does.
cdef Py_ssize_t AHEAD_ROWS = 24
cdef double MIN_AHEAD_FLOPS = 2e5
# The first chunks are smaller, AHEAD_FIRST_ROWS rows and twice as many
# each time up to AHEAD_ROWS: no step can start before the first chunk is
# projected, and each next one takes the second thread about as long as the
# steps of the one before take the first (measured, alternating in one
# process: B=1, H=64, T=50 forwards, LSTM 1.05x, GRU 1.05x, RNN 1.03x,
# about 1-1.7 us less a call).
cdef Py_ssize_t AHEAD_FIRST_ROWS = 4


cdef inline Py_ssize_t ahead_rows(Py_ssize_t chunk, Py_ssize_t block) noexcept nogil:
    """The most rows of chunk number `block` when projecting ahead."""
    return chunk if block >= 8 else min(chunk, AHEAD_FIRST_ROWS << block)


cdef bint project_ahead(int nt, double flops, double flops_per_step, double projection_flops,
                        int n_threads, Py_ssize_t N, Py_ssize_t chunk) noexcept:
    """Whether a forward's second thread projects ahead, rather than the
    team of nt (team_size) sharing every step: when the steps are too small
    to share, or cannot be shared (one panel, few rows), and the input
    product is worth a thread (MIN_PARALLEL_FLOPS: tests set 0 to run
    every parallel path)."""
    if n_threads < 2 or N <= chunk or (nt > 1 and flops_per_step >= MIN_WARM_FLOPS_PER_STEP):
        return False
    return (flops >= MIN_PARALLEL_FLOPS or warm()) and projection_flops >= min(MIN_AHEAD_FLOPS, MIN_PARALLEL_FLOPS)


# --- Ctrl-C during a long call ----------------------------------------------------
# The time loops run without the GIL, so Python's SIGINT handler (which raises
# KeyboardInterrupt) would run only when the call ends.  When the kernel is
# called from the main thread (the only one where Python runs signal
# handlers), thread 0 runs them every CHECK_SECONDS.  Threads sharing the
# units meet at a barrier after every step anyway: thread 0 proposes a check
# before the barrier (every thread reads the proposal after it, in one of two
# slots that alternate, so that the next proposal never lands in a slot still
# being read), runs the handlers with the GIL, and after one more barrier
# every thread knows whether to leave its loop.  Threads sharing the rows
# never wait for one another: thread 0 runs the handlers at the end of a block
# of its steps when due and raises a flag that every thread polls at the end
# of its blocks.  The caller then raises the handler's exception; outputs and
# gradients are left unwritten (a forward) or unchanged (a backward's weight
# gradients).
cdef double CHECK_SECONDS = 0.05
_main_thread_id = threading.main_thread().ident
_pending = None        # the exception a signal handler raised during a kernel


cdef struct Interrupt:
    bint enabled        # called from the main thread: signal handlers can run
    double next_check   # thread 0's clock
    bint check[2]       # a check at the barrier ending a block of steps (by parity)
    int stop            # a flag: a handler raised, every thread leaves its loop


cdef void interrupt_init(Interrupt *it) noexcept:
    it.enabled = threading.get_ident() == _main_thread_id
    it.next_check = fr_omp_get_wtime() + CHECK_SECONDS
    it.check[0] = it.check[1] = False
    it.stop = 0


cdef bint run_signal_handlers() noexcept with gil:
    global _pending
    try:
        PyErr_CheckSignals()
    except BaseException as exc:   # KeyboardInterrupt, or what a user's handler raises
        _pending = exc
        return True
    return False


cdef inline void interrupt_propose(Interrupt *it, int tid, Py_ssize_t block) noexcept nogil:
    """Before the barrier ending block `block`: thread 0 proposes a check when due."""
    if tid == 0 and it.enabled and fr_omp_get_wtime() >= it.next_check:
        it.check[block & 1] = True


cdef inline bint interrupt_stop(Interrupt *it, int tid, Py_ssize_t block, fr_barrier *barrier,
                                int *sense) noexcept nogil:
    """After that barrier, in every thread: whether to leave the loop."""
    if not it.check[block & 1]:
        return False
    if tid == 0:
        if run_signal_handlers():
            fr_flag_raise(&it.stop)
        it.next_check = fr_omp_get_wtime() + CHECK_SECONDS
    fr_barrier_wait(barrier, sense)    # every thread has read the proposal; the verdict is out
    if tid == 0:
        it.check[block & 1] = False
    return fr_flag_raised(&it.stop)


cdef inline bint interrupt_poll(Interrupt *it, int tid) noexcept nogil:
    """At the end of a block of steps of threads sharing the rows, each in its
    own time: whether to leave the loop."""
    if tid == 0 and it.enabled and fr_omp_get_wtime() >= it.next_check:
        if run_signal_handlers():
            fr_flag_raise(&it.stop)
        it.next_check = fr_omp_get_wtime() + CHECK_SECONDS
    return fr_flag_raised(&it.stop)


def _raise_pending():
    """Raise what a signal handler raised during the kernel just ended."""
    global _pending
    exc, _pending = _pending, None
    raise exc if exc is not None else KeyboardInterrupt()


# --- forward ------------------------------------------------------------------

cdef void forward_rows(
        int cell, const Steps *steps, Py_ssize_t s, Py_ssize_t m, Py_ssize_t j0,
        Py_ssize_t H, Py_ssize_t G, Py_ssize_t W, Py_ssize_t u0, Py_ssize_t n, Py_ssize_t gw,
        floating *y, Py_ssize_t ldy, const Py_ssize_t *y_rows, floating *xw, Py_ssize_t ldx, floating *hw,
        const floating *b_hn, const floating *hp, floating *hn, floating *c, const floating *rh,
        floating *gates, floating *saved, floating *h_prev) noexcept nogil:
    """The pointwise pass of step s (forward_rows_of), with the cell a
    constant in each copy of the row loop: in one loop for every cell, gcc
    kept the row pointers of all of them (some 45, most on the stack, each
    advanced at every row: a third of the pass at B=32, H=128)."""
    if cell == LSTM:
        forward_rows_of(LSTM, steps, s, m, j0, H, G, W, u0, n, gw, y, ldy, y_rows, xw, ldx, hw, b_hn, hp, hn,
                        c, rh, gates, saved, h_prev)
    elif cell == GRU:
        forward_rows_of(GRU, steps, s, m, j0, H, G, W, u0, n, gw, y, ldy, y_rows, xw, ldx, hw, b_hn, hp, hn,
                        c, rh, gates, saved, h_prev)
    elif cell == GRU_RESET_BEFORE:
        forward_rows_of(GRU_RESET_BEFORE, steps, s, m, j0, H, G, W, u0, n, gw, y, ldy, y_rows, xw, ldx, hw,
                        b_hn, hp, hn, c, rh, gates, saved, h_prev)
    elif cell == RNN_RELU:
        forward_rows_of(RNN_RELU, steps, s, m, j0, H, G, W, u0, n, gw, y, ldy, y_rows, xw, ldx, hw, b_hn,
                        hp, hn, c, rh, gates, saved, h_prev)
    else:
        forward_rows_of(RNN_TANH, steps, s, m, j0, H, G, W, u0, n, gw, y, ldy, y_rows, xw, ldx, hw, b_hn,
                        hp, hn, c, rh, gates, saved, h_prev)


cdef inline void forward_rows_of(
        int cell, const Steps *steps, Py_ssize_t s, Py_ssize_t m, Py_ssize_t j0,
        Py_ssize_t H, Py_ssize_t G, Py_ssize_t W, Py_ssize_t u0, Py_ssize_t n, Py_ssize_t gw,
        floating *y, Py_ssize_t ldy,       # (., ldy) OUT h of every row and step
        const Py_ssize_t *y_rows,          # (N) IN row of y for each packed row; NULL: the same
        floating *xw, Py_ssize_t ldx,      # (m, ldx) INOUT x @ weight_ih.T + biases + h @ weight_hh.T (GRU:
                                           # but the n gate's) of the step's rows of this thread in,
                                           # activated gates out; from its first column
        floating *hw,                      # (B, W) INOUT GRU: h @ weight_hh.T of the n gate in (its last
                                           # gw columns), hn out; from the thread's first column
        const floating *b_hn,              # (gw) IN GRU's bias_hh of the n gate
        const floating *hp,                # (B, H) IN the states before the step
        floating *hn,                      # (B, H) OUT the states after it
        floating *c,                       # (B, H) INOUT LSTM cell state
        const floating *rh,                # (B, H) IN GRU_RESET_BEFORE's r * h
        floating *gates,                   # (N, G*H) OUT as in forward_thread; NULL when xw is in it already
        floating *saved,                   # (N, H) OUT as in forward_thread, when training
        floating *h_prev) noexcept nogil:  # (N, H) OUT as in forward_thread, or NULL
    """The pointwise pass of step s over this thread's m rows of it (rows j0,
    j0, j0 + 1, ...) and its units [u0, u0 + n), and what backward keeps."""
    cdef Py_ssize_t i, j, r, g, GH = G * H
    cdef size_t row_bytes = n * sizeof(floating)
    cdef floating *yrow
    cdef floating *xrow
    cdef floating *hrow
    for i in range(m):
        j = j0 + i
        r = row_at(steps, s, j)
        yrow = y + (y_rows[r] if y_rows != NULL else r) * ldy + u0
        xrow = xw + i * ldx
        if cell == LSTM:
            lstm_forward_step(n, gw, xrow, c + j * H + u0, hn + j * H + u0, yrow)
        elif cell == GRU:
            hrow = hw + j * W + 2 * gw   # its n gate
            gru_forward_step(n, gw, xrow, hrow, b_hn, hp + j * H + u0, hn + j * H + u0, yrow)
        elif cell == GRU_RESET_BEFORE:
            gru_reset_before_forward_step(n, gw, xrow, hp + j * H + u0, hn + j * H + u0, yrow)
        else:
            rnn_forward_step(n, cell == RNN_RELU, xrow, hn + j * H + u0, yrow)
        if saved != NULL:   # training: keep what backward needs
            if gates != NULL:   # the RNN's backward needs only h'
                for g in range(G):
                    memcpy(gates + r * GH + g * H + u0, xrow + g * gw, row_bytes)
            if h_prev != NULL:   # the RNN's backward mostly reads h_prev from saved (see backward)
                memcpy(h_prev + r * H + u0, hp + j * H + u0, row_bytes)
            if cell == LSTM:
                memcpy(saved + r * H + u0, c + j * H + u0, row_bytes)
            elif cell == GRU:
                memcpy(saved + r * H + u0, hrow, row_bytes)
            elif cell == GRU_RESET_BEFORE:
                memcpy(saved + r * H + u0, rh + j * H + u0, row_bytes)
            else:
                memcpy(saved + r * H + u0, hn + j * H + u0, row_bytes)


cdef void weights_product(Py_ssize_t m, Py_ssize_t ncols, Py_ssize_t K, const floating *a, Py_ssize_t lda,
                          floating *packed, const floating *w, Py_ssize_t H, Py_ssize_t u0, Py_ssize_t units,
                          Py_ssize_t gw, floating *wbuf, floating *c, Py_ssize_t ldc, bint accumulate,
                          const floating *bias, bint last_first, bint pack) noexcept nogil:
    """c (m, ncols) [+]= a (m, K) @ the first ncols columns of a thread's
    packed weights [+ bias], as forward_thread packs them: gates of gw
    columns, each the rows [g*H + u0, g*H + u0 + units) of w (., K), then
    zeros.  Without wbuf, from `packed`; with it (a single step), from w
    itself, each group of four panels packed into wbuf (4 panels of K)
    just before its product reads it: the same kernels on the same panels,
    so the same bits, but a step reads the weights once, where packing them
    all first reads them, writes them and reads the copy back (measured:
    packing was 67% of an LSTMCell step at B=1, H=1024).  With pack (the
    first product from these weights in a call of several steps), likewise,
    but each group packed into its place in `packed`, kept for the products
    after.  last_first (rgemm's reversed) only applies to `packed` read as
    it is: the first product is that of step 0."""
    if wbuf == NULL and not pack:
        rgemm(m, ncols, K, a, lda, packed, c, ldc, accumulate, bias, last_first)
        return
    cdef Py_ssize_t nr = panel_width(<floating>0), P = ncols // nr, p, i, q, g, first
    cdef floating *dst
    if floating is float:   # a step of one or two rows: not even a panel packed (fr_row_product_f32)
        if wbuf != NULL and 0 < m <= FR_ROW_PRODUCT_ROWS:
            for p in range(P):
                g = p * nr // gw
                first = p * nr - g * gw
                fr_row_product_f32(m, K, a, lda, w + (g * H + u0 + first) * K, K, min(nr, units - first),
                                   c + p * nr, ldc, accumulate, NULL if bias == NULL else bias + p * nr)
            return
    for p in range(0, P, 4):
        q = min(4, P - p)
        dst = packed + p * nr * K if pack else wbuf
        for i in range(q):
            g = (p + i) * nr // gw                  # its gate, and its first unit in the gate
            first = (p + i) * nr - g * gw
            pack_rows(dst + i * nr * K, w + (g * H + u0 + first) * K, K, min(nr, units - first), K, 0, 1)
        rgemm(m, q * nr, K, a, lda, dst, c + p * nr, ldc, accumulate, NULL if bias == NULL else bias + p * nr)


cdef inline Py_ssize_t chunk_end(const Steps *steps, Py_ssize_t s0, Py_ssize_t chunk, const Rows *mine,
                                 Py_ssize_t *rows) noexcept nogil:
    """The end s1 of the chunk of steps [s0, s1) whose rows of the thread
    (`mine`, at least one step's) fit in `chunk`; their count in rows."""
    cdef Py_ssize_t s1 = s0 + 1, n = own_rows(steps.batch_sizes[s0], mine)
    while s1 < steps.n_steps and n + own_rows(steps.batch_sizes[s1], mine) <= chunk:
        n += own_rows(steps.batch_sizes[s1], mine)
        s1 += 1
    rows[0] = n
    return s1


cdef const floating *chunk_input(const Steps *steps, Py_ssize_t s0, Py_ssize_t s1, const Rows *mine,
                                 const floating *x, const Py_ssize_t *x_rows, Py_ssize_t I, bint consecutive,
                                 floating *xg) noexcept nogil:
    """The rows of x (., I) that a thread projects for steps [s0, s1): in
    place where they are consecutive in x, else gathered into xg."""
    if consecutive:
        return x + steps.offsets[s0] * I
    cdef Py_ssize_t s, i, r, q = 0
    for s in range(s0, s1):
        for i in range(own_rows(steps.batch_sizes[s], mine)):
            r = row_at(steps, s, mine.j0 + i)
            memcpy(xg + q * I, x + (x_rows[r] if x_rows != NULL else r) * I, I * sizeof(floating))
            q += 1
    return xg


cdef void forward_thread(
        int cell, const Steps *steps, Py_ssize_t B, Py_ssize_t I, Py_ssize_t H, Py_ssize_t G,
        int tid, int nt, bint by_rows, bint ahead, fr_barrier *barrier,
        floating *y, Py_ssize_t ldy,       # (., ldy) OUT h of every row and step
        const Py_ssize_t *y_rows,          # (N) IN row of y for each packed row; NULL: the same
        floating *h_n,                     # (B, H) OUT final states
        floating *c,                       # (B, H) INOUT LSTM cell state: c_0 in, c_n out
        floating *gates,                   # (N, G*H) OUT activated gates (LSTM, GRU); NULL otherwise
        floating *saved,                   # (N, H) OUT RNN h', LSTM c', GRU hn, GRU_RESET_BEFORE r * h;
                                           # NULL when not training
        floating *h_prev,                  # (N, H) OUT the state before each step; NULL when not training,
                                           # or when the RNN's backward will read it from saved
        const floating *x,                 # (., I) IN
        const Py_ssize_t *x_rows,          # (N) IN row of x for each packed row; NULL: the same
        const floating *w_ih,              # (G*H, I) IN
        const floating *w_hh,              # (G*H, H) IN
        const floating *b_ih,              # (G*H) IN
        const floating *b_hh,              # (G*H) IN
        const floating *h_0,               # (B, H) IN
        floating *hbuf,                    # (2, B, H) scratch: states of even and odd steps
        floating *packed_ih,               # (W*I) scratch: weight_ih packed
        floating *packed_hh,               # (W*H) scratch: weight_hh packed
        floating *bias,                    # (2, W) scratch: biases in the packed layout
        floating *xw, Py_ssize_t chunk,    # (chunk, W) scratch (this thread's when sharing the rows;
                                           # two, one a chunk in turn, projecting ahead):
                                           # x @ weight_ih.T of the thread's rows of a chunk of steps
        floating *hw,                      # (B, W) scratch: the GRU's h @ weight_hh.T of the n gate, a step
        floating *rh,                      # (B, H) scratch: GRU_RESET_BEFORE's r * h of a step
        floating *xg,                      # (chunk, I) scratch of this thread: x rows gathered
        floating *wbuf,                    # (4 * nr * max(I, H)) scratch of this thread, or NULL: a single
                                           # step's products pack their panels as they go (weights_product),
                                           # and packed_ih, packed_hh go unused
        Interrupt *intr) noexcept nogil:   # Ctrl-C: checked after each chunk of steps
    """Thread tid's part of the forward over the whole sequence.  Sharing the
    units (by_rows false): its share of the units, for every row and step,
    the threads meeting after every step.  Sharing the rows: its rows
    (thread_rows) with every unit, each thread on its own once the weights
    are packed (it projects its own rows of x, too).  Projecting ahead
    (nt = 2): thread 0 runs every step with every unit, thread 1 projects
    the next chunk of steps meanwhile (see AHEAD_ROWS).
    W = G * P * nr is the packed width."""
    cdef Py_ssize_t nr = panel_width(<floating>0), P = (H + nr - 1) // nr
    cdef Py_ssize_t W = G * P * nr, GH = G * H, S = steps.n_steps
    # the units this thread computes, and (sharing the rows, projecting ahead) the panels it packs
    cdef bint one_layout = by_rows or ahead    # every thread works in the layout of all the units
    cdef bint lockstep = not one_layout        # the threads meet after every step
    cdef Split sp = split_units(H, G, nr, 0 if one_layout else tid, 1 if one_layout else nt)
    cdef Split pk = split_units(H, G, nr, tid, nt)
    cdef Py_ssize_t u0 = sp.u0, n = sp.u1 - sp.u0, gw = sp.width, col = sp.col
    cdef Py_ssize_t g, u, i, j, r, s, s0, s1, rows, q, m, pc
    cdef bint last_first, first_use
    cdef Rows mine = thread_rows(by_rows, steps, tid, nt, B)
    cdef Py_ssize_t j0 = mine.j0
    cdef size_t row_bytes = n * sizeof(floating)
    cdef floating *hp
    cdef floating *hn
    cdef int sense = 0
    cdef bint busy = n > 0 and not (ahead and tid > 0)    # runs steps
    cdef Py_ssize_t block = 0, p0, p1, next_s1
    # training, each thread on its own block of rows: the input product of
    # each step goes straight to their rows of `gates` and the pointwise
    # pass activates the gates in place, rather than in xw and then copied
    # (H a multiple of the panel width: no padding columns)
    cdef bint direct = gates != NULL and by_rows and G * gw == GH and not steps.reverse
    cdef Py_ssize_t ldx = GH if direct else W
    cdef floating *xs
    cdef floating *xc
    # the rows of x a thread projects lie one after the other in x (else it gathers them)
    cdef bint consecutive = x_rows == NULL and not steps.reverse and not by_rows
    cdef Py_ssize_t xstride = padded(chunk * W * sizeof(floating)) // sizeof(floating)   # projecting ahead
    # each thread reads only its own panels (the threads sharing the units of
    # every step): it packs each group of them as its first product needs it,
    # which then reads it from cache rather than from memory (see
    # weights_product; measured, alternating in one process, B=16, H=1024
    # forwards: T=25 LSTM 1.02x, GRU 1.01x, RNN 1.01x; T=2 LSTM 1.08x)
    cdef bint pack_late = lockstep and wbuf == NULL

    if pk.u1 > pk.u0:   # this thread's panels of every gate (sharing the rows: of the whole layout)
        for g in range(G):
            pc = col + g * gw + (pk.p0 * nr if one_layout else 0)   # its first column of gate g
            if wbuf == NULL and not pack_late:
                pack_rows(packed_ih + pc * I, w_ih + (g * H + pk.u0) * I, I, pk.u1 - pk.u0, I, 0, pk.width // nr)
                pack_rows(packed_hh + pc * H, w_hh + (g * H + pk.u0) * H, H, pk.u1 - pk.u0, H, 0, pk.width // nr)
            # both biases folded into the input product, but the GRU's b_hn,
            # which r multiplies: it goes to the second row of `bias`
            for u in range(pk.width):
                if u >= pk.u1 - pk.u0:
                    bias[pc + u] = 0
                elif cell == GRU and g == 2:
                    bias[pc + u] = b_ih[g * H + pk.u0 + u]
                    bias[W + pc - 2 * gw + u] = b_hh[g * H + pk.u0 + u]
                else:
                    bias[pc + u] = b_ih[g * H + pk.u0 + u] + b_hh[g * H + pk.u0 + u]
    if busy:
        for j in range(mine.j0, mine.j1):
            memcpy(hbuf + j * H + u0, h_0 + j * H + u0, row_bytes)
    fr_barrier_wait(barrier, &sense)    # the packed weights and h_0 are in place

    s0 = 0
    if ahead:   # the first chunk: half of the panels each
        s1 = chunk_end(steps, 0, ahead_rows(chunk, 0), &mine, &rows)
        p0, p1 = tid * (W // nr) // nt, (tid + 1) * (W // nr) // nt
        rgemm(rows, (p1 - p0) * nr, I, chunk_input(steps, 0, s1, &mine, x, x_rows, I, consecutive, xg), I,
              packed_ih + p0 * nr * I, xw + p0 * nr, W, False, bias + p0 * nr)
        fr_barrier_wait(barrier, &sense)
    while s0 < S:
        # a chunk of steps [s0, s1): this thread's rows of them (all the rows
        # when sharing the units) projected, into rows 0, 1, ... of its xw
        # (its own part of xw when sharing the rows), or straight to `gates`;
        # projecting ahead, thread 1 projects the next chunk meanwhile
        s1 = chunk_end(steps, s0, ahead_rows(chunk, block) if ahead else chunk, &mine, &rows)
        xc = xw + (block & 1) * xstride if ahead else xw
        if ahead:
            if tid > 0 and s1 < S:
                next_s1 = chunk_end(steps, s1, ahead_rows(chunk, block + 1), &mine, &q)
                rgemm(q, W, I, chunk_input(steps, s1, next_s1, &mine, x, x_rows, I, consecutive, xg), I,
                      packed_ih, xw + ((block + 1) & 1) * xstride, W, False, bias)
        elif busy and by_rows and x_rows == NULL and not steps.reverse:
            # a block of rows: consecutive rows of x at each step, a product
            # per step (direct: col is 0 and G * gw is GH)
            q = 0
            for s in range(s0, s1):
                m = own_rows(steps.batch_sizes[s], &mine)
                rgemm(m, G * gw, I, x + (steps.offsets[s] + j0) * I, I, packed_ih + col * I,
                      gates + (steps.offsets[s] + j0) * GH if direct else xw + q * W + col, ldx, False, bias + col)
                q += m
        elif busy:
            weights_product(rows, G * gw, I, chunk_input(steps, s0, s1, &mine, x, x_rows, I, consecutive, xg), I,
                            packed_ih + col * I, w_ih, H, u0, n, gw, wbuf, xw + col, W, False, bias + col, False,
                            pack_late and s0 == 0)
        q = 0
        for s in range(s0, s1):
            rows = steps.batch_sizes[s]
            m = own_rows(rows, &mine)    # this thread's rows of the step
            xs = gates + (steps.offsets[s] + j0) * GH if direct else xc + q * W + col
            hp = hbuf + (s & 1) * B * H
            hn = hbuf + ((s + 1) & 1) * B * H
            # the step's product added to the input part in xs (the sum the
            # pointwise pass would form: the same bits, one buffer less to
            # write and read back), but the GRU's n gate, which r multiplies,
            # goes to hw.  Odd steps take the panels last group first: the
            # weights read last in one step are read first in the next, while
            # still in cache, where the weights are somewhat larger than it
            # (measured, Sapphire Rapids VM: B=1, H=64 LSTM, 64 KB of packed
            # weight_hh against a 48 KB L1: its product 1.19x in C, the
            # forward 1.04-1.06x; other sizes within 0.98-1.03x)
            last_first = s & 1
            first_use = pack_late and s == 0
            if cell == GRU_RESET_BEFORE:   # the n gate's product needs r * h of every unit
                if busy:
                    weights_product(m, 2 * gw, H, hp + j0 * H, H, packed_hh + col * H, w_hh, H, u0, n, gw, wbuf,
                                    xs, ldx, True, NULL, last_first, first_use)
                    for i in range(m):
                        j = j0 + i
                        gru_reset_before_reset_step(n, gw, xs + i * ldx, hp + j * H + u0, rh + j * H + u0)
                if lockstep:
                    fr_barrier_wait(barrier, &sense)    # every thread's share of r * h is in place
                if busy:
                    weights_product(m, gw, H, rh + j0 * H, H, packed_hh + (col + 2 * gw) * H, w_hh + 2 * H * H,
                                    H, u0, n, gw, wbuf, xs + 2 * gw, ldx, True, NULL, last_first, first_use)
            elif cell == GRU and busy:   # r and z, then n
                weights_product(m, 2 * gw, H, hp + j0 * H, H, packed_hh + col * H, w_hh, H, u0, n, gw, wbuf,
                                xs, ldx, True, NULL, last_first, first_use)
                weights_product(m, gw, H, hp + j0 * H, H, packed_hh + (col + 2 * gw) * H, w_hh + 2 * H * H, H, u0,
                                n, gw, wbuf, hw + j0 * W + col + 2 * gw, W, False, NULL, last_first, first_use)
            elif busy:
                weights_product(m, G * gw, H, hp + j0 * H, H, packed_hh + col * H, w_hh, H, u0, n, gw, wbuf,
                                xs, ldx, True, NULL, last_first, first_use)
            if busy:
                forward_rows(cell, steps, s, m, j0, H, G, W, u0, n, gw, y, ldy, y_rows, xs, ldx,
                             hw + col, bias + W + col, hp, hn, c, rh, NULL if direct else gates, saved, h_prev)
            q += m
            if lockstep:
                if s == s1 - 1:
                    interrupt_propose(intr, tid, block)
                fr_barrier_wait(barrier, &sense)    # every thread's share of h' is in place
        if ahead:
            interrupt_propose(intr, tid, block)
            fr_barrier_wait(barrier, &sense)    # the chunk is done, and the next one projected
        if interrupt_poll(intr, tid) if by_rows else interrupt_stop(intr, tid, block, barrier, &sense):
            return
        block += 1
        s0 = s1

    if busy:   # each row's state after its own last step
        for j in range(mine.j0, mine.j1):
            memcpy(h_n + j * H + u0, hbuf + (steps.lengths[j] & 1) * B * H + j * H + u0, row_bytes)


def forward(int cell,
            floating[:, :] y,                   # (N, H) OUT; rows may be strided, elements not;
                                                # with y_rows, (rows, H) written at y_rows
            floating[:, ::1] h_n,               # (B, H) OUT final state (packed order)
            floating[:, ::1] c_n,               # (B, H) OUT LSTM final cell state, else (0, H)
            floating[:, ::1] gates,             # (N, G*H) OUT when training (LSTM, GRU), else (0, G*H)
            floating[:, ::1] saved,             # (N, H) OUT when training (what the cell keeps), else (0, H)
            floating[:, ::1] h_prev,            # (N, H) OUT when training, else (0, H); (0, H) too
                                                # when training an RNN whose backward reads it
                                                # from saved (see backward)
            const floating[:, ::1] x,           # (N, I) IN; with x_rows, (rows, I) read at x_rows
            const floating[:, ::1] weight_ih,   # (G*H, I) IN
            const floating[:, ::1] weight_hh,   # (G*H, H) IN
            const floating[::1] bias_ih,        # (G*H,) IN (zeros without bias)
            const floating[::1] bias_hh,        # (G*H,) IN
            const floating[:, ::1] h_0,         # (B, H) IN
            const floating[:, ::1] c_0,         # (B, H) IN LSTM, else (0, H)
            const Py_ssize_t[::1] batch_sizes,  # (S,) IN non-increasing, batch_sizes[0] = B
            bint reverse, int n_threads,
            const Py_ssize_t[::1] y_rows=None,   # (N,) IN row of y for each packed row
            const Py_ssize_t[::1] x_rows=None):  # (N,) IN row of x for each packed row
    """One layer, one direction.  Training (what backward needs is kept in
    gates, saved and h_prev) when saved has rows.  With y_rows, the outputs
    go to those rows of y (a padded batch, say) instead of rows 0..N-1; with
    x_rows, the inputs come from those rows of x (read in place, not packed
    first)."""
    cdef Py_ssize_t B = h_n.shape[0], H = h_n.shape[1], I = x.shape[1]
    cdef Py_ssize_t N = x_rows.shape[0] if x_rows is not None else x.shape[0]
    cdef Py_ssize_t G = weight_hh.shape[0] // H
    cdef Py_ssize_t nr = panel_width(<floating>0), W = G * ((H + nr - 1) // nr) * nr
    cdef bint training = saved.shape[0] > 0
    dtype = np.float32 if floating is float else np.float64
    if y.strides[1] != sizeof(floating):
        raise ValueError("forward: the rows of y must be contiguous")
    if training and G > 1 and h_prev.shape[0] == 0:
        raise ValueError("forward: only the RNN's backward can do without h_prev")
    if y_rows is not None and (y_rows.shape[0] != N or not rows_within(y_rows, y.shape[0])):
        raise ValueError("forward: y_rows must map every packed row to a row of y")
    cdef const Py_ssize_t *y_rows_ptr = &y_rows[0] if y_rows is not None and N else NULL
    if x_rows is not None and not rows_within(x_rows, x.shape[0]):
        raise ValueError("forward: x_rows must map every packed row to a row of x")
    cdef const Py_ssize_t *x_rows_ptr = &x_rows[0] if x_rows is not None and N else NULL
    check_batch_sizes(batch_sizes, B)
    cdef Py_ssize_t packed_hh_bytes = W * H * sizeof(floating)
    cdef double flops = 2.0 * N * G * H * (I + H), flops_per_step = 2.0 * B * G * H * (I + H)
    cdef int nt = team_size(flops, flops_per_step, n_threads, H, nr, B, packed_hh_bytes, not training), tid, team
    cdef bint ahead = project_ahead(nt, flops, flops_per_step, 2.0 * N * G * H * I, n_threads, N,
                                    max(AHEAD_ROWS, B))
    if ahead:
        nt = 2
    cdef bint by_rows = not ahead and share_rows(nt, B, packed_hh_bytes, not training)
    # rows of a chunk: all of them when sharing the units, a thread's when
    # sharing the rows (each thread then has its own xw); at least a whole
    # step's, whatever team OpenMP gives.  Projecting ahead: two buffers of
    # fewer rows, in turn
    cdef Py_ssize_t chunk = max(AHEAD_ROWS if ahead else CHUNK_ROWS, B)
    cdef Py_ssize_t n_xw = nt if by_rows else 2 if ahead else 1
    # each thread gathers the rows it projects for itself, unless they are
    # consecutive in x at each step (forwards, x packed)
    cdef Py_ssize_t xg_size = chunk * I if reverse or x_rows is not None else 0, f = sizeof(floating)
    # the GRU's n gate (every other step product goes into xw)
    cdef Py_ssize_t hw_size = B * W if cell == GRU else 0
    # a single step whose threads share the units packs the weights as its
    # products read them (weights_product), into a buffer of four panels per
    # thread; the threads sharing the rows each need all of the weights, so
    # they pack them once, together
    cdef Py_ssize_t wbuf_size = 4 * nr * max(I, H) if batch_sizes.shape[0] == 1 and not by_rows else 0
    cdef Py_ssize_t packed_size = 0 if wbuf_size else W * (I + H)
    cdef Scratch scratch = Scratch(padded(packed_size * f) + padded(2 * W * f)
                                   + n_xw * padded(chunk * W * f) + padded(hw_size * f) + padded(2 * B * H * f)
                                   + padded(B * H * f) + steps_bytes(batch_sizes.shape[0], B)
                                   + nt * padded(xg_size * f) + nt * padded(wbuf_size * f))
    cdef Steps steps = make_steps(batch_sizes, B, reverse, scratch)
    cdef floating *packed_ih = <floating *>scratch.take(packed_size * f)
    cdef floating *packed_hh = packed_ih + (W * I if packed_size else 0)
    cdef floating *bias = <floating *>scratch.take(2 * W * f)
    cdef floating *xw = <floating *>scratch.take(n_xw * padded(chunk * W * f))
    cdef floating *hw = <floating *>scratch.take(hw_size * f)
    cdef floating *hbuf = <floating *>scratch.take(2 * B * H * f)
    cdef floating *rh = <floating *>scratch.take(B * H * f)
    cdef floating *xg = <floating *>scratch.take(nt * padded(xg_size * f))
    cdef floating *wbuf = <floating *>scratch.take(nt * padded(wbuf_size * f))
    cdef floating *c_ptr = &c_n[0, 0] if cell == LSTM else NULL
    cdef floating *gates_ptr = &gates[0, 0] if training and G > 1 else NULL
    cdef floating *saved_ptr = &saved[0, 0] if training else NULL
    cdef floating *h_prev_ptr = &h_prev[0, 0] if training and h_prev.shape[0] > 0 else NULL
    cdef fr_barrier barrier
    fr_barrier_init(&barrier, 1)
    cdef Interrupt intr
    interrupt_init(&intr)
    if cell == LSTM:
        c_n[:, :] = c_0

    with nogil, parallel(num_threads=nt):
        tid = fr_omp_get_thread_num()
        team = fr_omp_get_num_threads()
        if tid == 0:
            fr_barrier_init(&barrier, team)
        fr_omp_barrier()
        forward_thread(cell, &steps, B, I, H, G, tid, team, by_rows, ahead and team > 1, &barrier,
                       &y[0, 0], y.strides[0] // sizeof(floating), y_rows_ptr, &h_n[0, 0], c_ptr,
                       gates_ptr, saved_ptr, h_prev_ptr, &x[0, 0], x_rows_ptr, &weight_ih[0, 0], &weight_hh[0, 0],
                       &bias_ih[0], &bias_hh[0], &h_0[0, 0], hbuf, packed_ih, packed_hh,
                       bias, xw + (tid * padded(chunk * W * f) // f if by_rows else 0), chunk, hw, rh,
                       xg + tid * padded(xg_size * f) // f,
                       wbuf + tid * padded(wbuf_size * f) // f if wbuf_size else NULL, &intr)
    call_ended()
    if intr.stop:
        _raise_pending()


# --- products over all rows, for the gradients ----------------------------------

# dweight += dG.T @ X over all N rows, in blocks of GRAD_KC rows: the threads
# pack each block of X (and of h_prev) together, then take the output rows in
# tiles of at most GRAD_TILE (tile_count, tile_start), each tile reading its
# columns of the dG block (in place, or transposed into scratch: below); one
# parallel region for all the blocks (with one region per block, one thread
# packed while the other waited: measured, the single region and the
# balanced tiles made RNN, GRU and LSTM forward+backward 2.5-7% faster at
# B=32, H=128).  The packed
# blocks are the only scratch, whatever N.  Each block reads and writes all
# of dweight once, from memory where it is larger than L3 (32 MB for the
# LSTM's two at H=1024): blocks of 512 rows rather than 256 halve that
# (measured on the Zen 5 VM, forward+backward alternating in one process:
# LSTM B=16, H=1024 1.03x, B=64, H=512 1.04x; GRU B=16, H=1024 1.03x; RNN
# B=64, H=512 1.01x; LSTM B=32, H=128, whose dweight fits L2, 0.99x).
cdef Py_ssize_t GRAD_TILE = 48
cdef Py_ssize_t GRAD_KC = 512
# The tiles' products read dG.T in dG itself, 48 columns of each of 512 rows
# (rgemm_at), where its rows are at most 4 KB long: transposing each tile
# into scratch first took 5.0-6.4% of the profile of training at H=128.
# Measured on the Zen 5 VM, forward+backward alternating in one process
# (medians of 40 ratios): at H=128, B=32: GRU 1.05x, LSTM 1.06x, RNN 1.04x;
# B=8: GRU 1.10x, LSTM 1.06x, RNN 1.08x; RNN B=64, H=512 (2 KB rows) 1.03x.
# Longer rows lost (a pass over a tile then reads 512 rows 6-16 KB apart,
# 3-8 MB): LSTM B=64, H=512 (8 KB) 0.99x, GRU 1.00x (6 KB); B=16, H=1024:
# LSTM 0.98x, GRU 0.99x.
cdef Py_ssize_t grad_in_place_row_bytes = 4096


def grad_in_place_bytes(nbytes=None):
    """The longest rows (bytes) of dG that the weight gradients' products
    read transposed in place (above: from a transposed copy); sets it when
    given (tests vary it: the results do not depend on it).  Returns the
    previous value."""
    global grad_in_place_row_bytes
    previous = grad_in_place_row_bytes
    if nbytes is not None:
        grad_in_place_row_bytes = max(0, int(nbytes))
    return previous


# The RNN's blocks of steps in its backward (see pack_prev): their packed
# states are the time loop's scratch, which with larger blocks would set the
# peak of the RNN's forward+backward (at B=64, H=512: 22.4 MB; PyTorch's
# 22.4-22.5).
cdef Py_ssize_t PREV_ROWS = 256
cdef Py_ssize_t DX_TILE = 96


cdef void weight_grad_tile(floating *dw, Py_ssize_t ldw, Py_ssize_t m0, Py_ssize_t m1,
                           const floating *g, Py_ssize_t ldg, Py_ssize_t kc,
                           const floating *packed, Py_ssize_t n_out,
                           floating *dw2, Py_ssize_t m_end2, const floating *packed2, Py_ssize_t n_out2,
                           double *sums, floating *gt) noexcept nogil:
    """dw[m0:m1] += g[:kc, m0:m1].T @ b, b (kc, n_out) packed by columns; and
    the same for the rows below m_end2 of dw2 with b2; and, unless sums is
    NULL, sums[m0:m1] += the columns of g[:kc, m0:m1] summed (the bias
    gradients, a pass over the tile's part of g that brings it into cache
    for the products, rather than a pass of their own over all of g).  The
    products read g.T in g itself (rgemm_at) where g's rows are at most
    grad_in_place_row_bytes long, else from a copy transposed into gt,
    scratch (m1 - m0, kc): the same bits either way."""
    if sums != NULL:
        add_column_sums(sums + m0, g + m0, ldg, kc, m1 - m0)
    if ldg * <Py_ssize_t>sizeof(floating) <= grad_in_place_row_bytes:
        rgemm_at(m1 - m0, n_out, kc, g + m0, ldg, packed, dw + m0 * ldw, ldw, True)
        if dw2 != NULL and m0 < m_end2:
            rgemm_at(min(m1, m_end2) - m0, n_out2, kc, g + m0, ldg, packed2, dw2 + m0 * n_out2, n_out2, True)
        return
    transpose(gt, kc, g + m0, ldg, kc, m1 - m0)
    rgemm(m1 - m0, n_out, kc, gt, kc, packed, dw + m0 * ldw, ldw, True)
    if dw2 != NULL and m0 < m_end2:
        rgemm(min(m1, m_end2) - m0, n_out2, kc, gt, kc, packed2, dw2 + m0 * n_out2, n_out2, True)


cdef void add_column_sums(double *sums, const floating *a, Py_ssize_t lda,
                          Py_ssize_t rows, Py_ssize_t cols) noexcept nogil:
    """sums (cols, at most 64) += a (rows x cols) summed over its rows, one
    row after another: the sums of all N rows taken block after block of
    rows, in order, are those of one pass over them, whatever the blocks."""
    cdef double acc[64]
    cdef Py_ssize_t r, j
    for j in range(cols):
        acc[j] = sums[j]
    for r in range(rows):
        for j in range(cols):
            acc[j] += a[r * lda + j]
    for j in range(cols):
        sums[j] = acc[j]


cdef inline Py_ssize_t tile_count(Py_ssize_t rows, int threads) noexcept nogil:
    """Tiles of a product's output rows: a multiple of the threads (fixed
    tiles of 48 rows left RNN's 128 rows in 96 + 32 over two threads), each
    at most GRAD_TILE rows (tile_start).  Results do not depend on the
    tiles, so they may depend on the threads."""
    cdef Py_ssize_t n = (rows + GRAD_TILE - 7) // (GRAD_TILE - 6)
    return max(1, (n + threads - 1) // threads) * threads


cdef inline Py_ssize_t tile_start(Py_ssize_t rows, Py_ssize_t n_tiles, Py_ssize_t t) noexcept nogil:
    """The first row of tile t of n_tiles: about t / n_tiles of the rows, at a
    multiple of the kernel's 6 rows.  With tile_count's n_tiles (a share of at
    most GRAD_TILE - 6 rows each), a tile has at most GRAD_TILE rows."""
    if t >= n_tiles:
        return rows
    return min(rows, (t * rows // n_tiles + 3) // 6 * 6)


cdef void weight_grads(floating *dw_ih, floating *dw_hh, floating *dw_hn,
                       const floating *g, Py_ssize_t ldg, Py_ssize_t GH, Py_ssize_t GH_direct,
                       const floating *g_hn, const floating *x, Py_ssize_t I,
                       const floating *h_prev, Py_ssize_t H, Py_ssize_t N, double *sums,
                       floating *packed_x, floating *packed_h, floating *gt, int n_threads,
                       double min_flops) noexcept nogil:
    """dw_ih (GH, I) += g.T @ x, g (N, GH) with rows ldg apart ; unless dw_hh is
    NULL, dw_hh[:GH_direct] (H wide) += g[:, :GH_direct].T @ h_prev ; and with g_hn
    (the GRU's n gate, (N, H)), dw_hn (H, H) += g_hn.T @ h_prev.  Unless sums
    (GH, and H more with g_hn) is NULL, sums += the column sums of g (and of g_hn).
    packed_x, packed_h: two blocks of x and of h_prev packed (grad_block_len);
    gt (n_threads, GRAD_TILE * GRAD_KC).  On one thread below min_flops
    (product_min_flops)."""
    cdef int threads = n_threads, tid, team
    if 2.0 * GH * (I + H) * N < min_flops:
        threads = 1
    cdef Py_ssize_t n_ih = tile_count(GH, threads), n_hn = tile_count(H, threads) if g_hn != NULL else 0
    cdef Py_ssize_t next_tile = 0
    cdef fr_barrier barrier
    fr_barrier_init(&barrier, 1)
    with parallel(num_threads=threads):
        tid = fr_omp_get_thread_num()
        team = fr_omp_get_num_threads()
        if tid == 0:
            fr_barrier_init(&barrier, team)
        fr_omp_barrier()
        weight_grads_thread(dw_ih, dw_hh, dw_hn, g, ldg, GH, GH_direct, g_hn, x, I, h_prev, H, N, sums,
                            packed_x, packed_h, gt + tid * GRAD_TILE * GRAD_KC, n_ih, n_hn, &next_tile,
                            tid, team, &barrier)


cdef inline Py_ssize_t grad_block_len(floating dummy, Py_ssize_t n) noexcept nogil:
    """Scratch (elements) for weight_grads' two packed blocks of an (., n) operand."""
    return 2 * fr_packed_len(n, GRAD_KC, panel_width(dummy))


cdef inline Py_ssize_t take_tile(Py_ssize_t *next_tile, Py_ssize_t *taken, Py_ssize_t block,
                                 Py_ssize_t n_tiles) noexcept nogil:
    """The next tile of block `block` (of n_tiles each, numbered from 0 by a
    counter shared by the threads, block after block) for this thread to
    do, or -1 once they are all taken; a tile of the next block taken
    meanwhile stays in *taken, for then."""
    if taken[0] < 0:
        taken[0] = fr_take_next(next_tile)
    cdef Py_ssize_t t = taken[0] - block * n_tiles
    if t >= n_tiles:
        return -1
    taken[0] = -1
    return t


cdef void weight_grads_thread(floating *dw_ih, floating *dw_hh, floating *dw_hn,
                              const floating *g, Py_ssize_t ldg, Py_ssize_t GH, Py_ssize_t GH_direct,
                              const floating *g_hn, const floating *x, Py_ssize_t I,
                              const floating *h_prev, Py_ssize_t H, Py_ssize_t N, double *sums,
                              floating *packed_x, floating *packed_h, floating *gt,
                              Py_ssize_t n_ih, Py_ssize_t n_hn, Py_ssize_t *next_tile,
                              int tid, int nt, fr_barrier *barrier) noexcept nogil:
    """Thread tid's part of weight_grads: its panels of each block packed, then
    after a barrier the block's tiles, taken in turn from a shared counter
    (their costs differ: only some rows of dw_ih have rows of dw_hh too).  Tile
    t of block b is number b * n_tiles + t; a thread that takes one of the next
    block keeps it for then (with at least as many tiles as threads, none of
    the block after can be taken before every thread is done with this one).
    n_ih tiles of the rows of dw_ih, then n_hn of dw_hn's (tile_count).
    So every tile of a block is done before any of the next starts, and the
    column sums of each tile's columns are taken block after block, in order.
    The blocks alternate between two packed buffers, so that one barrier per
    block is enough: a thread packing block b + 1 knows every thread is done
    with block b - 1, the last one in that buffer."""
    cdef Py_ssize_t nr = panel_width(<floating>0), P_x = (I + nr - 1) // nr, P_h = (H + nr - 1) // nr
    cdef Py_ssize_t len_x = fr_packed_len(I, GRAD_KC, nr), len_h = fr_packed_len(H, GRAD_KC, nr)
    cdef Py_ssize_t n_tiles = n_ih + n_hn, k0 = 0, kc, t, block = 0, taken = -1
    cdef floating *px
    cdef floating *ph
    cdef int sense = 0
    while k0 < N:
        kc = min(GRAD_KC, N - k0)
        px = packed_x + (block & 1 if nt > 1 else 0) * len_x   # one thread: one buffer (the other's pages
        ph = packed_h + (block & 1 if nt > 1 else 0) * len_h   # stay untouched, not resident)
        pack_cols(px, x + k0 * I, I, I, kc, tid * P_x // nt, (tid + 1) * P_x // nt)
        if dw_hh != NULL:
            pack_cols(ph, h_prev + k0 * H, H, H, kc, tid * P_h // nt, (tid + 1) * P_h // nt)
        fr_barrier_wait(barrier, &sense)    # the block is packed
        while True:
            t = take_tile(next_tile, &taken, block, n_tiles)
            if t < 0:
                break
            if t < n_ih:
                weight_grad_tile(dw_ih, I, tile_start(GH, n_ih, t), tile_start(GH, n_ih, t + 1),
                                 g + k0 * ldg, ldg, kc, px, I, dw_hh, GH_direct, ph, H, sums, gt)
            else:
                weight_grad_tile(dw_hn, H, tile_start(H, n_hn, t - n_ih), tile_start(H, n_hn, t - n_ih + 1),
                                 g_hn + k0 * H, H, kc, ph, H, NULL, 0, NULL, 0,
                                 sums + GH if sums != NULL else NULL, gt)
        k0 += kc
        block += 1


cdef void rows_product(floating *c, Py_ssize_t ldc, const floating *a, Py_ssize_t lda,
                       const floating *packed, Py_ssize_t m, Py_ssize_t n, Py_ssize_t k,
                       bint accumulate, const floating *bias, int n_threads, double min_flops) noexcept nogil:
    """c (m, n) [+]= a (m, k) @ w.T [+ bias], w packed, bias padded to whole
    panels or NULL; the rows in tiles of at most about DX_TILE, as many for
    each thread (one thread below min_flops)."""
    cdef int threads = n_threads
    if 2.0 * m * n * k < min_flops:
        threads = 1
    cdef Py_ssize_t n_tiles = (m + DX_TILE - 1) // DX_TILE, i, r0, r1
    n_tiles = (n_tiles + threads - 1) // threads * threads
    for i in prange(n_tiles, num_threads=threads, schedule='dynamic'):
        r0 = tile_start(m, n_tiles, i)
        r1 = tile_start(m, n_tiles, i + 1)
        if r1 > r0:
            rgemm(r1 - r0, n, k, a + r0 * lda, lda, packed, c + r0 * ldc, ldc, accumulate, bias)


cdef void pack_columns(floating *packed, const floating *s, Py_ssize_t lds, Py_ssize_t n,
                       Py_ssize_t k, int n_threads, double min_flops) noexcept nogil:
    """packed = s (k, n) packed by columns (for products a @ s), panels over the
    threads (one below min_flops / 8 elements)."""
    cdef Py_ssize_t nr = panel_width(<floating>0), n_panels = (n + nr - 1) // nr, i
    cdef int threads = n_threads if n_threads < n_panels else <int>n_panels
    if n * k < min_flops / 8:
        threads = 1
    for i in prange(n_panels, num_threads=threads, schedule='static'):
        pack_cols(packed, s, lds, n, k, i, i + 1)


cdef inline bint unpacked_columns(floating *c, Py_ssize_t m) noexcept nogil:
    """A product of m rows with a matrix by columns reads the matrix where it
    is, unpacked (fr_cols_product_f32), rather than packed first (c, the
    product's output, only gives the type)."""
    if floating is float:
        return 0 < m <= FR_COLS_PRODUCT_ROWS
    return False


cdef inline void cols_product(Py_ssize_t m, Py_ssize_t n, Py_ssize_t k, const floating *a, Py_ssize_t lda,
                              const floating *s, Py_ssize_t lds, floating *c, Py_ssize_t ldc,
                              bint accumulate) noexcept nogil:
    """c (m, n) [+]= a (m, k) @ s (k, n), s read where it is (unpacked_columns)."""
    if floating is float:
        fr_cols_product_f32(m, n, k, a, lda, s, lds, c, ldc, accumulate)


cdef void columns_product(floating *c, Py_ssize_t ldc, const floating *a, Py_ssize_t lda,
                          const floating *s, Py_ssize_t lds, floating *packed, Py_ssize_t m, Py_ssize_t n,
                          Py_ssize_t k, bint accumulate, int n_threads, double min_flops) noexcept nogil:
    """c (m, n) [+]= a (m, k) @ s (k, n): s packed by columns into `packed`
    first, then rows_product; or, for the few rows of unpacked_columns, read
    where it is, the threads taking its panels (whose results do not depend
    on how they are shared)."""
    cdef Py_ssize_t nr = panel_width(<floating>0), n_panels = (n + nr - 1) // nr, i, j0, j1
    cdef int threads = n_threads if n_threads < n_panels else <int>n_panels
    if not unpacked_columns(c, m):
        pack_columns(packed, s, lds, n, k, n_threads, min_flops)
        rows_product(c, ldc, a, lda, packed, m, n, k, accumulate, NULL, n_threads, min_flops)
        return
    if 2.0 * m * n * k < min_flops:
        threads = 1
    for i in prange(threads, num_threads=threads, schedule='static'):
        j0 = i * n_panels // threads * nr
        j1 = min((i + 1) * n_panels // threads * nr, n)
        if j1 > j0:
            cols_product(m, j1 - j0, k, a, lda, s + j0, lds, c + j0, ldc, accumulate)


# --- backward -----------------------------------------------------------------

cdef Py_ssize_t BACKWARD_BLOCK = 64   # steps between two chances to check for Ctrl-C


cdef void backward_rows(
        int cell, const Steps *steps, Py_ssize_t s, Py_ssize_t m, Py_ssize_t j0,
        Py_ssize_t H, Py_ssize_t GH, Py_ssize_t u0, Py_ssize_t n, floating *gates, floating *d,
        floating *saved, const floating *h_prev, const floating *dy, Py_ssize_t lddy, const Py_ssize_t *dy_rows,
        floating *dh, floating *dc, const floating *c_0) noexcept nogil:
    """The pointwise backward of step s (backward_rows_of), with the cell a
    constant in each copy of the row loop, as forward_rows."""
    if cell == LSTM:
        backward_rows_of(LSTM, steps, s, m, j0, H, GH, u0, n, gates, d, saved, h_prev, dy, lddy, dy_rows,
                         dh, dc, c_0)
    elif cell == GRU:
        backward_rows_of(GRU, steps, s, m, j0, H, GH, u0, n, gates, d, saved, h_prev, dy, lddy, dy_rows,
                         dh, dc, c_0)
    elif cell == GRU_RESET_BEFORE:
        backward_rows_of(GRU_RESET_BEFORE, steps, s, m, j0, H, GH, u0, n, gates, d, saved, h_prev, dy, lddy,
                         dy_rows, dh, dc, c_0)
    elif cell == RNN_RELU:
        backward_rows_of(RNN_RELU, steps, s, m, j0, H, GH, u0, n, gates, d, saved, h_prev, dy, lddy,
                         dy_rows, dh, dc, c_0)
    else:
        backward_rows_of(RNN_TANH, steps, s, m, j0, H, GH, u0, n, gates, d, saved, h_prev, dy, lddy,
                         dy_rows, dh, dc, c_0)


cdef inline void backward_rows_of(
        int cell, const Steps *steps, Py_ssize_t s, Py_ssize_t m, Py_ssize_t j0,
        Py_ssize_t H, Py_ssize_t GH, Py_ssize_t u0, Py_ssize_t n,
        floating *gates,                   # (N, G*H) INOUT as in backward_thread
        floating *d,                       # (B, G*H) OUT dhw of the step
        floating *saved,                   # (N, H) INOUT as in backward_thread
        const floating *h_prev,            # (N, H) IN
        const floating *dy, Py_ssize_t lddy, const Py_ssize_t *dy_rows,   # as in backward_thread
        floating *dh,                      # (B, H) INOUT
        floating *dc,                      # (B, H) INOUT LSTM
        const floating *c_0) noexcept nogil:   # (B, H) IN LSTM
    """The pointwise backward of step s over this thread's m rows of it and
    its units [u0, u0 + n)."""
    cdef Py_ssize_t i, j, r
    cdef const floating *c_prev
    cdef const floating *dyrow
    for i in range(m):
        j = j0 + i
        r = row_at(steps, s, j)
        dyrow = dy + (dy_rows[r] if dy_rows != NULL else r) * lddy + u0
        if cell == LSTM:
            c_prev = c_0 + j * H + u0 if s == 0 else saved + row_at(steps, s - 1, j) * H + u0
            lstm_backward_step(n, H, gates + r * GH + u0, d + j * GH + u0, saved + r * H + u0, c_prev,
                               dh + j * H + u0, dc + j * H + u0, dyrow)
        elif cell == GRU:
            gru_backward_step(n, H, gates + r * GH + u0, d + j * GH + u0, saved + r * H + u0,
                              h_prev + r * H + u0, dh + j * H + u0, dyrow)
        elif cell == GRU_RESET_BEFORE:
            gru_reset_before_backward_step(n, H, gates + r * GH + u0, d + j * GH + u0,
                                           h_prev + r * H + u0, dh + j * H + u0, dyrow)
        else:
            rnn_backward_step(n, cell == RNN_RELU, gates + r * GH + u0, d + j * GH + u0,
                              saved + r * H + u0, dh + j * H + u0, dyrow)


# The RNN's backward without h_prev.  The RNN keeps h' (saved) for its
# backward, and the state before a step is h' of the step before: keeping
# both doubles what the tape holds, but the time loop overwrites h' with the
# gates' gradient dG, so the states must be read before that.  So the loop
# goes by blocks of steps: each thread packs the states before the block's
# steps, of its own rows and units (pack_prev), runs the steps, and once the
# threads have met, they add dG.T @ those states to a sum of dweight_hh in
# scratch, in tiles of its rows taken as weight_grads_thread takes them.  The
# sum goes into dweight_hh after the loop (an interrupted backward leaves it
# unchanged); dweight_ih and the biases come after the loop, as for every
# cell.  A block's rows must be consecutive packed rows: forwards, or
# backwards over sequences of equal lengths.  Measured, RNN at B=64, T=50,
# I=H=512: peak memory of forward+backward 28.3 -> 22.4 MB (PyTorch 22.4);
# forward+backward against the build that kept h_prev, medians of 9
# pairwise ratios: 1.02x there, 1.01x at B=32, H=128, 0.99x at B=8, H=128
# (where dG, transposed twice, once for each weight gradient, costs about
# what the forward saves by not copying the states).

cdef inline Py_ssize_t block_first_step(const Steps *steps, Py_ssize_t s_hi, Py_ssize_t rows_max) noexcept nogil:
    """The first step of the block of steps that ends at s_hi: steps taken
    down from s_hi while their rows fit in rows_max (at least one step)."""
    cdef Py_ssize_t s = s_hi, rows = steps.batch_sizes[s_hi]
    while s > 0 and rows + steps.batch_sizes[s - 1] <= rows_max:
        s -= 1
        rows += steps.batch_sizes[s]
    return s


cdef inline Py_ssize_t block_first_row(const Steps *steps, Py_ssize_t s_lo, Py_ssize_t s_hi) noexcept nogil:
    """The first packed row of the steps [s_lo, s_hi] (consecutive rows)."""
    return row_at(steps, s_hi if steps.reverse else s_lo, 0)


cdef void pack_prev(floating *packed, const Steps *steps, Py_ssize_t s_lo, Py_ssize_t s_hi, Py_ssize_t k0,
                    Py_ssize_t kc, const floating *h_0, const floating *saved, Py_ssize_t H,
                    Py_ssize_t j0, Py_ssize_t j1, Py_ssize_t p0, Py_ssize_t p1) noexcept nogil:
    """Of the states before each of the steps [s_lo, s_hi] (kc rows from
    packed row k0): rows j0 <= j < j1 of each step, panels [p0, p1), packed
    as pack_cols packs (kc, H) rows.  h_0 before step 0, else h' of the step
    before, from saved.  A thread packs the rows and units it computes
    itself, before the block's steps overwrite h' with dG: no thread waits
    for another to pack."""
    cdef Py_ssize_t nr = panel_width(<floating>0), s, j, k, p, width
    cdef Py_ssize_t full = min(p1, H // nr)   # whole panels: copies of a constant size, inlined
    cdef const floating *src
    cdef floating *dst
    for s in range(s_lo, s_hi + 1):
        k = row_at(steps, s, 0) - k0
        for j in range(j0, min(j1, steps.batch_sizes[s])):
            src = (h_0 if s == 0 else saved + row_at(steps, s - 1, 0) * H) + j * H
            for p in range(p0, full):
                memcpy(packed + (p * kc + k + j) * nr, src + p * nr, panel_width(<floating>0) * sizeof(floating))
            for p in range(max(p0, full), p1):
                width = H - p * nr
                dst = packed + (p * kc + k + j) * nr
                memcpy(dst, src + p * nr, width * sizeof(floating))
                memset(dst + width, 0, (nr - width) * sizeof(floating))


cdef void backward_thread(
        int cell, const Steps *steps, Py_ssize_t B, Py_ssize_t H, Py_ssize_t G,
        int tid, int nt, bint by_rows, fr_barrier *barrier,
        floating *gates,                   # (N, G*H) INOUT forward's gates in, dxw out
        floating *saved,                   # (N, H) INOUT RNN h', LSTM c' (in); GRU hn in, dhn out;
                                           # GRU_RESET_BEFORE r * h (in)
        const floating *h_prev,            # (N, H) IN
        const floating *dy, Py_ssize_t lddy,   # (., lddy) IN gradient of the outputs
        const Py_ssize_t *dy_rows,             # (N) IN row of dy for each packed row; NULL: the same
        floating *dh,                      # (B, H) INOUT gradient of the state: dh_n in, dh_0 out
        floating *dc,                      # (B, H) INOUT LSTM: dc_n in, dc_0 out
        const floating *c_0,               # (B, H) IN LSTM initial cell state
        const floating *w_hh,              # (G*H, H) IN
        floating *packed,                  # (P*nr*K) scratch: weight_hh[:K] packed by columns
        floating *packed_hn,               # (P*nr*H) scratch: GRU_RESET_BEFORE's W_hn packed by columns
        floating *drh,                     # (B, H) scratch: GRU_RESET_BEFORE's gradient of r * h
        floating *dhw,                     # (2, B, G*H) scratch: dhw of even and odd steps
        const floating *h_0,               # (B, H) IN the RNN's initial state when h_prev is NULL
        floating *dw_hh,                   # (H, H) OUT when h_prev is NULL: the sum of dG.T @ h_prev
        floating *packed_prev,             # (2, len) scratch when h_prev is NULL: pack_prev's blocks
        floating *gt,                      # (GRAD_TILE * rows_max) scratch of this thread, likewise
        Py_ssize_t rows_max,               # the most rows of a block of steps
        Py_ssize_t *next_tile,             # shared tile counter (weight_grads_thread), at 0
        Interrupt *intr) noexcept nogil:   # Ctrl-C: checked every BACKWARD_BLOCK steps, or block
    """Thread tid's part of backpropagation through time, every step from the
    last: its share of the units for every row, or (by_rows) its rows
    (thread_rows) with every unit, as in the forward.  K, the rows of
    weight_hh that multiply h directly, is G*H but for GRU_RESET_BEFORE (2*H:
    r and z)."""
    cdef Py_ssize_t nr = panel_width(<floating>0), GH = G * H, S = steps.n_steps
    cdef Py_ssize_t K = 2 * H if cell == GRU_RESET_BEFORE else GH
    cdef Split sp = split_units(H, G, nr, 0 if by_rows else tid, 1 if by_rows else nt)
    cdef Split pk = split_units(H, G, nr, tid, nt)   # the panels this thread packs
    cdef Py_ssize_t u0 = sp.u0, n = sp.u1 - sp.u0
    cdef Rows mine = thread_rows(by_rows, steps, tid, nt, B)
    cdef Py_ssize_t j0 = mine.j0
    cdef Py_ssize_t s, i, j, r, m
    cdef floating *d
    cdef int sense = 0
    cdef bint busy = n > 0
    cdef bint block_end
    # the GRUs' pointwise backward leaves in dh the direct part of h's gradient
    cdef bint add_to_dh = cell == GRU or cell == GRU_RESET_BEFORE
    # without h_prev (the RNN), blocks of steps [s_lo, s_hi], rows [k0, k0 + kc)
    cdef bint by_blocks = h_prev == NULL
    cdef Py_ssize_t s_hi = S - 1, s_lo = 0, k0 = 0, kc = 0, blk = 0, t, taken = -1
    cdef Py_ssize_t n_tiles = tile_count(H, nt), len_prev = fr_packed_len(H, rows_max, nr)
    cdef floating *prev = NULL
    # a single step of few rows: its products read weight_hh unpacked (columns_product)
    cdef bint unpacked = S == 1 and unpacked_columns(dh, B)
    if pk.u1 > pk.u0 and not unpacked:
        pack_cols(packed, w_hh, H, H, K, pk.p0, pk.p0 + pk.width // nr)
        if cell == GRU_RESET_BEFORE:
            pack_cols(packed_hn, w_hh + 2 * H * H, H, H, H, pk.p0, pk.p0 + pk.width // nr)
    if by_rows:
        fr_barrier_wait(barrier, &sense)    # every thread's panels are packed
    while s_hi >= 0:
        if by_blocks:
            s_lo = block_first_step(steps, s_hi, rows_max)
            k0 = block_first_row(steps, s_lo, s_hi)
            kc = 0
            for s in range(s_lo, s_hi + 1):
                kc += steps.batch_sizes[s]
            prev = packed_prev + (blk & 1) * len_prev
            if busy:
                pack_prev(prev, steps, s_lo, s_hi, k0, kc, h_0, saved, H, mine.j0, mine.j1, sp.p0,
                          sp.p0 + sp.width // nr)
        for s in range(s_hi, s_lo - 1, -1):
            d = dhw + (s & 1) * B * GH
            if busy:
                if s + 1 < S:   # dh of the rows still running after step s: dhw of step s+1 @ weight_hh
                    m = own_rows(steps.batch_sizes[s + 1], &mine)
                    rgemm(m, n, K, dhw + ((s + 1) & 1) * B * GH + j0 * GH, GH,
                          packed + sp.p0 * nr * K, dh + j0 * H + u0, H, add_to_dh)
                m = own_rows(steps.batch_sizes[s], &mine)
                backward_rows(cell, steps, s, m, j0, H, GH, u0, n, gates, d, saved, h_prev, dy, lddy, dy_rows,
                              dh, dc, c_0)
            if cell == GRU_RESET_BEFORE:
                if not by_rows:
                    fr_barrier_wait(barrier, &sense)    # every thread's share of dn is in place
                if busy:   # d(r * h) = dn @ W_hn, then dr
                    if unpacked:
                        cols_product(m, n, H, d + j0 * GH + 2 * H, GH, w_hh + 2 * H * H + u0, H,
                                     drh + j0 * H + u0, H, False)
                    else:
                        rgemm(m, n, H, d + j0 * GH + 2 * H, GH, packed_hn + sp.p0 * nr * H, drh + j0 * H + u0,
                              H, False)
                    for j in range(j0, j0 + m):
                        r = row_at(steps, s, j)
                        gru_reset_before_reset_backward_step(n, H, gates + r * GH + u0, d + j * GH + u0,
                                                             drh + j * H + u0, h_prev + r * H + u0, dh + j * H + u0)
            if by_blocks:
                if not by_rows:
                    fr_barrier_wait(barrier, &sense)    # every thread's share of dhw is in place
                continue
            block_end = (S - s) % BACKWARD_BLOCK == 0   # the last step of a block of BACKWARD_BLOCK
            if by_rows:
                if block_end and interrupt_poll(intr, tid):
                    return
                continue
            if block_end:
                interrupt_propose(intr, tid, (S - s) // BACKWARD_BLOCK)
            fr_barrier_wait(barrier, &sense)    # every thread's share of dhw is in place
            if block_end and interrupt_stop(intr, tid, (S - s) // BACKWARD_BLOCK, barrier, &sense):
                return
        if by_blocks:
            interrupt_propose(intr, tid, blk)
            fr_barrier_wait(barrier, &sense)    # the block's dG and states before its steps are in place
            if interrupt_stop(intr, tid, blk, barrier, &sense):
                return
            while True:   # its tiles of dw_hh
                t = take_tile(next_tile, &taken, blk, n_tiles)
                if t < 0:
                    break
                weight_grad_tile(dw_hh, H, tile_start(H, n_tiles, t), tile_start(H, n_tiles, t + 1),
                                 gates + k0 * GH, GH, kc, prev, H, NULL, 0, NULL, 0, NULL, gt)
        blk += 1
        s_hi = s_lo - 1
    if busy:   # the gradient of the initial state
        m = own_rows(steps.batch_sizes[0], &mine)
        if unpacked:
            cols_product(m, n, K, dhw + j0 * GH, GH, w_hh + u0, H, dh + j0 * H + u0, H, add_to_dh)
        else:
            rgemm(m, n, K, dhw + j0 * GH, GH, packed + sp.p0 * nr * K, dh + j0 * H + u0, H, add_to_dh)


def backward(int cell,
             floating[:, ::1] dx,                # (N, I) OUT, or INOUT when accumulate_dx; may be x
             floating[:, ::1] dh_0,              # (B, H) OUT
             floating[:, ::1] dc_0,              # (B, H) OUT LSTM, else (0, H)
             floating[:, ::1] dweight_ih,        # (G*H, I) INOUT
             floating[:, ::1] dweight_hh,        # (G*H, H) INOUT
             floating[::1] dbias_ih,             # (G*H,) INOUT, (0,) without bias
             floating[::1] dbias_hh,             # (G*H,) INOUT, (0,) without bias
             floating[:, ::1] gates,             # (N, G*H) INOUT forward's workspace, consumed
             floating[:, ::1] saved,             # (N, H) INOUT forward's, consumed (GRU)
             const floating[:, ::1] h_prev,      # (N, H) IN forward's; (0, H): the RNN's, read from
                                                 # saved (see pack_prev)
             const floating[:, :] dy,            # (N, H) IN; rows may be strided, elements not;
                                                 # with dy_rows, read at dy_rows
             const floating[:, ::1] dh_n,        # (B, H) IN
             const floating[:, ::1] dc_n,        # (B, H) IN LSTM, else (0, H)
             const floating[:, ::1] x,           # (N, I) IN forward's input
             const floating[:, ::1] weight_ih,   # (G*H, I) IN
             const floating[:, ::1] weight_hh,   # (G*H, H) IN
             const floating[:, ::1] c_0,         # (B, H) IN LSTM, else (0, H)
             const Py_ssize_t[::1] batch_sizes,  # (S,) IN
             bint reverse, bint accumulate_dx, int n_threads,
             const Py_ssize_t[::1] dy_rows=None,    # (N,) IN row of dy for each packed row
             const floating[:, ::1] h_0=None):      # (B, H) IN the RNN's initial state, without h_prev
    """Backpropagation through time of one forward call (same arguments)."""
    cdef Py_ssize_t B = dh_0.shape[0], H = dh_0.shape[1], N = x.shape[0], I = x.shape[1]
    cdef Py_ssize_t GH = gates.shape[1], G = GH // H
    # rows of weight_hh whose product is with h itself (the GRUs' n gate's is not)
    cdef Py_ssize_t GH_direct = 2 * H if cell == GRU or cell == GRU_RESET_BEFORE else GH
    cdef Py_ssize_t nr = panel_width(<floating>0)
    cdef bint has_bias = dbias_ih.shape[0] > 0
    dtype = np.float32 if floating is float else np.float64
    if dy.strides[1] != sizeof(floating):
        raise ValueError("backward: the rows of dy must be contiguous")
    if dy_rows is not None and (dy_rows.shape[0] != N or not rows_within(dy_rows, dy.shape[0])):
        raise ValueError("backward: dy_rows must map every packed row to a row of dy")
    cdef const Py_ssize_t *dy_rows_ptr = &dy_rows[0] if dy_rows is not None and N else NULL
    check_batch_sizes(batch_sizes, B)
    cdef bint by_blocks = h_prev.shape[0] == 0
    if by_blocks and (G > 1 or h_0 is None or h_0.shape[0] != B or h_0.shape[1] != H):
        raise ValueError("backward: without h_prev, the RNN's backward needs h_0 (B, H)")
    if by_blocks and reverse and batch_sizes[batch_sizes.shape[0] - 1] != B:
        raise ValueError("backward: without h_prev, a reverse direction needs sequences of equal lengths")
    cdef Py_ssize_t packed_hh_bytes = fr_packed_len(H, GH, nr) * sizeof(floating)
    cdef int nt = team_size(2.0 * N * GH * H, 2.0 * B * GH * H, n_threads, H, nr, B, packed_hh_bytes, False), tid, team
    cdef bint by_rows = share_rows(nt, B, packed_hh_bytes, False)
    cdef Py_ssize_t f = sizeof(floating)
    if n_threads < 1:
        n_threads = 1
    cdef Py_ssize_t phn = fr_packed_len(H, H, nr) if cell == GRU_RESET_BEFORE else 0
    # without h_prev: the blocks of steps' packed states (two, in turn), the
    # transposed tiles of each thread, and the sum of dweight_hh
    cdef Py_ssize_t rows_max = max(PREV_ROWS, B)
    cdef Py_ssize_t n_prev = 2 * fr_packed_len(H, rows_max, nr) if by_blocks else 0
    cdef Py_ssize_t n_gt = GRAD_TILE * rows_max if by_blocks else 0
    cdef Py_ssize_t n_sum = H * H if by_blocks else 0
    cdef Scratch scratch = Scratch(padded(fr_packed_len(H, GH, nr) * f) + padded(phn * f)
                                   + padded(B * H * f) + padded(2 * B * GH * f) + steps_bytes(batch_sizes.shape[0], B)
                                   + padded(n_prev * f) + nt * padded(n_gt * f) + padded(n_sum * f))
    cdef Steps steps = make_steps(batch_sizes, B, reverse, scratch)
    cdef floating *packed = <floating *>scratch.take(fr_packed_len(H, GH, nr) * f)
    cdef floating *packed_hn = <floating *>scratch.take(phn * f)
    cdef floating *drh = <floating *>scratch.take(B * H * f)
    cdef floating *dhw = <floating *>scratch.take(2 * B * GH * f)
    cdef floating *packed_prev = <floating *>scratch.take(n_prev * f)
    cdef floating *gt_blocks = <floating *>scratch.take(nt * padded(n_gt * f))
    cdef floating *dw_hh_sum = <floating *>scratch.take(n_sum * f)
    cdef const floating *h_0_ptr = &h_0[0, 0] if by_blocks else NULL
    cdef const floating *h_prev_ptr = NULL if by_blocks else &h_prev[0, 0]
    cdef Py_ssize_t next_tile = 0, c, e
    cdef floating *saved_ptr = &saved[0, 0]
    cdef floating *dc_ptr = &dc_0[0, 0] if cell == LSTM else NULL
    cdef const floating *c_0_ptr = &c_0[0, 0] if cell == LSTM else NULL
    cdef fr_barrier barrier
    fr_barrier_init(&barrier, 1)
    cdef Interrupt intr
    interrupt_init(&intr)
    dh_0[:, :] = dh_n
    if cell == LSTM:
        dc_0[:, :] = dc_n
    if by_blocks:
        memset(dw_hh_sum, 0, n_sum * f)

    with nogil, parallel(num_threads=nt):
        tid = fr_omp_get_thread_num()
        team = fr_omp_get_num_threads()
        if tid == 0:
            fr_barrier_init(&barrier, team)
        fr_omp_barrier()
        backward_thread(cell, &steps, B, H, G, tid, team, by_rows, &barrier, &gates[0, 0], saved_ptr, h_prev_ptr,
                        &dy[0, 0], dy.strides[0] // sizeof(floating), dy_rows_ptr, &dh_0[0, 0], dc_ptr, c_0_ptr,
                        &weight_hh[0, 0], packed, packed_hn, drh, dhw, h_0_ptr, dw_hh_sum, packed_prev,
                        gt_blocks + tid * padded(n_gt * f) // f, rows_max, &next_tile, &intr)
    if intr.stop:   # before any weight gradient changed
        call_ended()
        _raise_pending()
    if by_blocks:   # (before `products` below takes the same scratch)
        with nogil:
            for e in range(H * H):
                (&dweight_hh[0, 0])[e] += dw_hh_sum[e]

    # gates now holds dxw, the gradient of x @ weight_ih.T, for every row; the
    # gradient of the recurrent products is the same, but for the GRU's n
    # gate, whose part (dhn) is in saved.  Then the products over all rows.
    cdef Py_ssize_t pi = fr_packed_len(I, GH, nr)
    cdef Py_ssize_t px = grad_block_len(<floating>0, I)
    cdef Py_ssize_t ph = 0 if by_blocks else grad_block_len(<floating>0, H)   # the RNN's states: in the loop
    cdef Scratch products = Scratch(padded(pi * f) + padded(px * f) + padded(ph * f)
                                    + padded(n_threads * GRAD_TILE * GRAD_KC * f) + padded((GH + H) * sizeof(double)))
    cdef floating *packed_w_ih = <floating *>products.take(pi * f)
    cdef floating *packed_x = <floating *>products.take(px * f)
    cdef floating *packed_h = <floating *>products.take(ph * f)
    cdef floating *gt = <floating *>products.take(n_threads * GRAD_TILE * GRAD_KC * f)
    # the bias gradients: the column sums of dxw (GH), and of the GRU's dhn (H)
    cdef double *sums = <double *>products.take((GH + H) * sizeof(double)) if has_bias else NULL
    cdef double min_flops = product_min_flops()
    with nogil:
        if has_bias:
            memset(sums, 0, (GH + H) * sizeof(double))
        # dweight_ih += dxw.T @ x ; dweight_hh += dhw.T @ h_prev
        weight_grads(&dweight_ih[0, 0], NULL if by_blocks else &dweight_hh[0, 0],
                     &dweight_hh[2 * H, 0] if cell == GRU else NULL,
                     &gates[0, 0], GH, GH, GH_direct, saved_ptr if cell == GRU else NULL,
                     &x[0, 0], I, h_prev_ptr, H, N, sums, packed_x, packed_h, gt, n_threads, min_flops)
        if cell == GRU_RESET_BEFORE:   # dweight_hn += dn.T @ (r * h)
            weight_grads(&dweight_hh[2 * H, 0], NULL, NULL, &gates[0, 2 * H], GH, H, 0, NULL,
                         saved_ptr, H, NULL, 0, N, NULL, packed_h, NULL, gt, n_threads, min_flops)
        # dx = dxw @ weight_ih, last: x is read no more, so dx may be x itself
        columns_product(&dx[0, 0], I, &gates[0, 0], GH, &weight_ih[0, 0], I, packed_w_ih, N, I, GH,
                        accumulate_dx, n_threads, min_flops)
        if has_bias:
            for c in range(GH):
                dbias_ih[c] += <floating>sums[c]
                # bias_hh of the GRU's n gate sits inside r * (.): its gradient is dhn's
                dbias_hh[c] += <floating>(sums[c + H] if cell == GRU and c >= 2 * H else sums[c])
    call_ended()


# --- a dense layer on the last axis, with the same products -------------------
# fastrnn.nn.Linear runs here rather than on NumPy's `@`: NumPy's BLAS would
# start its own worker threads, which keep spinning on the cores the next
# recurrent call needs, and the results would depend on its thread count.

def linear_forward(floating[:, ::1] y,             # (N, out) OUT
                   const floating[:, ::1] x,       # (N, in) IN
                   const floating[:, ::1] weight,  # (out, in) IN
                   const floating[::1] bias,       # (out,) IN, or (0,)
                   int n_threads):
    """y = x @ weight.T + bias"""
    cdef Py_ssize_t N = x.shape[0], I = x.shape[1], O = weight.shape[0], i
    cdef Py_ssize_t nr = panel_width(<floating>0), f = sizeof(floating), P = (O + nr - 1) // nr
    cdef Scratch scratch = Scratch(padded(fr_packed_len(O, I, nr) * f) + padded(P * nr * f))
    cdef floating *packed = <floating *>scratch.take(fr_packed_len(O, I, nr) * f)
    cdef floating *b = <floating *>scratch.take(P * nr * f)
    cdef bint has_bias = bias.shape[0] > 0
    cdef double min_flops = product_min_flops()
    for i in range(P * nr):
        b[i] = bias[i] if has_bias and i < O else 0
    with nogil:
        pack_rows(packed, &weight[0, 0], I, O, I, 0, P)
        rows_product(&y[0, 0], O, &x[0, 0], I, packed, N, O, I, False, b if has_bias else NULL, n_threads,
                     min_flops)
    call_ended()


def linear_backward(floating[:, ::1] dx,           # (N, in) OUT, or (0, in): not wanted
                    floating[:, ::1] dweight,      # (out, in) INOUT
                    floating[::1] dbias,           # (out,) INOUT, or (0,)
                    const floating[:, ::1] dy,     # (N, out) IN
                    const floating[:, ::1] x,      # (N, in) IN
                    const floating[:, ::1] weight,  # (out, in) IN
                    int n_threads):
    """dx = dy @ weight ; dweight += dy.T @ x ; dbias += dy summed over rows."""
    cdef Py_ssize_t N = x.shape[0], I = x.shape[1], O = weight.shape[0]
    cdef Py_ssize_t nr = panel_width(<floating>0), f = sizeof(floating)
    cdef Py_ssize_t pw = fr_packed_len(I, O, nr), px = grad_block_len(<floating>0, I)
    if n_threads < 1:
        n_threads = 1
    cdef Scratch scratch = Scratch(padded(pw * f) + padded(px * f) + padded(n_threads * GRAD_TILE * GRAD_KC * f)
                                   + padded(O * sizeof(double)))
    cdef floating *packed_w = <floating *>scratch.take(pw * f)
    cdef floating *packed_x = <floating *>scratch.take(px * f)
    cdef floating *gt = <floating *>scratch.take(n_threads * GRAD_TILE * GRAD_KC * f)
    cdef double *sums = <double *>scratch.take(O * sizeof(double)) if dbias.shape[0] > 0 else NULL
    cdef Py_ssize_t c
    cdef double min_flops = product_min_flops()
    with nogil:
        if sums != NULL:
            memset(sums, 0, O * sizeof(double))
        if dx.shape[0] > 0:
            columns_product(&dx[0, 0], I, &dy[0, 0], O, &weight[0, 0], I, packed_w, N, I, O, False, n_threads,
                            min_flops)
        weight_grads(&dweight[0, 0], NULL, NULL, &dy[0, 0], O, O, 0, NULL, &x[0, 0], I, NULL, 0, N, sums,
                     packed_x, NULL, gt, n_threads, min_flops)
        if sums != NULL:
            for c in range(O):
                dbias[c] += <floating>sums[c]
    call_ended()
