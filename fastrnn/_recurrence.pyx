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
# Forward, per (layer, direction):
#   1. gates = x @ weight_ih.T                       one GEMM over all N rows
#   2. for each step s (the sequential part):
#        hw = h @ weight_hh.T                        rgemm on the active rows
#        pointwise step of each active row           _cells.pxd
# Backward walks the steps in reverse (dh = dhw @ weight_hh per step), then
# forms dx, dweight_ih, dweight_hh and the bias gradients as GEMMs over all
# N rows.
#
# Threads: the batch is cut into shards of consecutive rows, one per thread,
# and each shard runs its whole time loop on its own: rows of a recurrence
# never interact, so the threads never wait for each other.  The per-step
# product is the packed kernel of csrc/rgemm.h, whose every output element is
# computed the same way whatever the shard, and the big GEMMs are cut into
# tiles whose sizes depend on the shapes only, each one single-threaded BLAS
# call (BLAS is held to one thread during a call: its own thread pool and
# OpenMP's would fight over the cores).  So results are bitwise identical for
# any number of threads.
#
# The Python wrappers validate nothing: fastrnn.layers does that, and
# allocates every output.  They allocate only scratch, before the GIL is
# released; nothing below them raises or allocates.
import numpy as np
from cython.parallel cimport prange
from libc.string cimport memcpy

from fastrnn._common cimport (
    floating, gemm, rgemm, pack_rows, pack_cols, panel_width, fr_packed_len,
    FR_HAVE_OPENMP, fr_omp_get_max_threads)
from fastrnn._cells cimport (
    rnn_forward_step, rnn_backward_step, lstm_forward_step, lstm_backward_step,
    gru_forward_step, gru_backward_step)


cdef enum:
    RNN_TANH = 0
    RNN_RELU = 1
    LSTM = 2
    GRU = 3

CELLS = {"RNN_TANH": RNN_TANH, "RNN_RELU": RNN_RELU, "LSTM": LSTM, "GRU": GRU}
GATES = {RNN_TANH: 1, RNN_RELU: 1, LSTM: 4, GRU: 3}

# Below this many flops a call runs on one thread: waking a second one costs
# more than it saves.
cdef double MIN_PARALLEL_FLOPS = 2e6


def openmp_enabled():
    """Whether the extension was compiled with OpenMP."""
    return bool(FR_HAVE_OPENMP)


def openmp_max_threads():
    return fr_omp_get_max_threads()


# --- BLAS thread control ----------------------------------------------------
# The get/set thread-count functions of the BLAS libraries that
# scipy.linalg.cython_blas calls, found once by fastrnn._threads.  Calls nest
# and may come from several Python threads: the first pins, the last restores.

ctypedef int (*get_threads_t)() noexcept nogil
ctypedef void (*set_threads_t)(int) noexcept nogil

cdef enum:
    MAX_BLAS = 8
cdef int _n_blas = -1            # -1: not looked up yet
cdef get_threads_t _blas_get[MAX_BLAS]
cdef set_threads_t _blas_set[MAX_BLAS]
cdef int _blas_saved[MAX_BLAS]
cdef int _blas_depth = 0


def register_blas(functions):
    """functions: [(address of get_num_threads, address of set_num_threads)]."""
    global _n_blas
    cdef size_t get_addr, set_addr
    _n_blas = 0
    for get_addr, set_addr in functions[:MAX_BLAS]:
        _blas_get[_n_blas] = <get_threads_t>get_addr
        _blas_set[_n_blas] = <set_threads_t>set_addr
        _n_blas += 1


cdef void blas_pin() except *:
    # called with the GIL held, which serialises the counter
    global _blas_depth
    cdef int i
    if _n_blas < 0:
        from fastrnn._threads import register_blas_libraries
        register_blas_libraries()
    if _blas_depth == 0:
        for i in range(_n_blas):
            _blas_saved[i] = _blas_get[i]()
            if _blas_saved[i] != 1:
                _blas_set[i](1)
    _blas_depth += 1


cdef void blas_unpin() noexcept:
    global _blas_depth
    cdef int i
    _blas_depth -= 1
    if _blas_depth == 0:
        for i in range(_n_blas):
            if _blas_saved[i] != 1:
                _blas_set[i](_blas_saved[i])


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


def _layout(const Py_ssize_t[::1] batch_sizes, Py_ssize_t batch):
    """offsets (S,) and lengths (B,) of a packed batch."""
    cdef Py_ssize_t S = batch_sizes.shape[0], s, j, total = 0
    offsets = np.empty(S, dtype=np.intp)
    lengths = np.zeros(batch, dtype=np.intp)
    cdef Py_ssize_t[::1] off = offsets, lens = lengths
    for s in range(S):
        off[s] = total
        total += batch_sizes[s]
        for j in range(batch_sizes[s]):
            lens[j] += 1
    return offsets, lengths


def _shards(const Py_ssize_t[::1] lengths, double flops_per_row_step, int n_threads):
    """Boundaries (n + 1,) of n shards of consecutive rows with about equal
    numbers of row-steps, n <= n_threads; one shard for small problems."""
    cdef Py_ssize_t B = lengths.shape[0], j, k, total = 0, acc = 0
    for j in range(B):
        total += lengths[j]
    cdef int n = n_threads if n_threads < B else <int>B
    if n < 1 or total * flops_per_row_step < MIN_PARALLEL_FLOPS:
        n = 1
    bounds = np.empty(n + 1, dtype=np.intp)
    cdef Py_ssize_t[::1] b = bounds
    b[0] = 0
    k = 1
    for j in range(B):
        acc += lengths[j]
        # close shard k once it holds its share, leaving a row for each one left
        if k < n and acc * n >= total * k and B - (j + 1) >= n - k:
            b[k] = j + 1
            k += 1
    while k < n:                     # not reached: every shard gets a row above
        b[k] = B - (n - k)
        k += 1
    b[n] = B
    return bounds


cdef Steps make_steps(const Py_ssize_t[::1] batch_sizes, const Py_ssize_t[::1] offsets,
                      const Py_ssize_t[::1] lengths, bint reverse):
    """The geometry struct the loops read (pointing into the arrays given)."""
    cdef Steps steps
    steps.n_steps = batch_sizes.shape[0]
    steps.batch_sizes = &batch_sizes[0]
    steps.offsets = &offsets[0]
    steps.lengths = &lengths[0]
    steps.reverse = reverse
    return steps


def _plan(const Py_ssize_t[::1] batch_sizes, Py_ssize_t batch, double flops_per_row_step, int n_threads):
    """offsets, lengths and shard boundaries of a packed batch."""
    offsets, lengths = _layout(batch_sizes, batch)
    return offsets, lengths, _shards(lengths, flops_per_row_step, n_threads)


cdef inline Py_ssize_t gemm_tile(Py_ssize_t rows) noexcept nogil:
    """Rows per tile of a big GEMM: a function of the shape alone (never of
    the thread count), about 8 tiles, at least 64 rows, a multiple of 8."""
    cdef Py_ssize_t t = (rows + 7) // 8
    t = (t + 7) // 8 * 8
    return t if t > 64 else 64


cdef void gemm_tiled(bint trans_a, Py_ssize_t m, Py_ssize_t n, Py_ssize_t k,
                     const floating *a, Py_ssize_t lda,
                     const floating *b, Py_ssize_t ldb, bint trans_b,
                     floating beta, floating *c, Py_ssize_t ldc,
                     int n_threads) noexcept nogil:
    """c (m x n) = op(a) @ op(b) + beta c, in row tiles of c, one BLAS call each."""
    cdef Py_ssize_t tile = gemm_tile(m), n_tiles = (m + tile - 1) // tile, i, r0, rows
    cdef int threads = n_threads if n_threads < n_tiles else <int>n_tiles
    if 2.0 * m * n * k < MIN_PARALLEL_FLOPS:
        threads = 1
    for i in prange(n_tiles, num_threads=threads, schedule='dynamic'):
        r0 = i * tile
        rows = min(tile, m - r0)
        gemm(trans_a, trans_b, <int>rows, <int>n, <int>k, 1,
             a + (r0 if trans_a else r0 * lda), <int>lda, b, <int>ldb,
             beta, c + r0 * ldc, <int>ldc)


cdef void add_column_sums(floating *out, const floating *a, Py_ssize_t lda,
                          Py_ssize_t rows, Py_ssize_t cols, int n_threads) noexcept nogil:
    """out (cols) += sum over the rows of a (rows x cols), in a fixed order."""
    cdef Py_ssize_t n_blocks = (cols + 63) // 64, i
    cdef int threads = n_threads if n_threads < n_blocks else <int>n_blocks
    if rows * cols < MIN_PARALLEL_FLOPS:
        threads = 1
    for i in prange(n_blocks, num_threads=threads, schedule='static'):
        column_sums_block(out, a, lda, rows, i * 64, min(cols, i * 64 + 64))


cdef void column_sums_block(floating *out, const floating *a, Py_ssize_t lda,
                            Py_ssize_t rows, Py_ssize_t c0, Py_ssize_t c1) noexcept nogil:
    cdef double acc[64]
    cdef Py_ssize_t r, j, w = c1 - c0
    for j in range(w):
        acc[j] = 0
    for r in range(rows):
        for j in range(w):
            acc[j] += a[r * lda + c0 + j]
    for j in range(w):
        out[c0 + j] += <floating>acc[j]


cdef void pack_parallel(floating *packed, const floating *w, Py_ssize_t ldw,
                        Py_ssize_t n, Py_ssize_t k, bint by_rows, int n_threads) noexcept nogil:
    """Pack w for rgemm: by_rows, w is (n x k) and products are A @ w.T;
    otherwise w is (k x n) and products are A @ w."""
    cdef Py_ssize_t nr = panel_width(<floating>0), n_panels = (n + nr - 1) // nr
    cdef Py_ssize_t per = (n_panels + 3) // 4, i
    cdef int threads = n_threads if n_threads < 4 else 4
    if n * k < MIN_PARALLEL_FLOPS:
        threads = 1
    for i in prange(4, num_threads=threads, schedule='static'):
        if by_rows:
            pack_rows(packed, w, ldw, n, k, min(i * per, n_panels), min(i * per + per, n_panels))
        else:
            pack_cols(packed, w, ldw, n, k, min(i * per, n_panels), min(i * per + per, n_panels))


# --- forward ------------------------------------------------------------------

cdef void forward_rows(
        int cell, const Steps *steps, Py_ssize_t j0, Py_ssize_t j1,
        Py_ssize_t H, Py_ssize_t G,
        floating *y, Py_ssize_t ldy,       # (N, ldy) OUT h of every row and step
        floating *h,                       # (B, H) INOUT state, rows j0..j1
        floating *c,                       # (B, H) INOUT LSTM cell state
        floating *gates,                   # (N, G*H) INOUT xw in, what backward needs out
        floating *saved,                   # (N, H) OUT RNN h', LSTM c', GRU hn; NULL when not training
        floating *h_prev,                  # (N, H) OUT state before each step; NULL when not training
        floating *hw,                      # (B, G*H) scratch
        const floating *w_hh_packed,       # weight_hh packed by rows
        const floating *b_ih,              # (G*H) IN
        const floating *b_hh) noexcept nogil:  # (G*H) IN
    """The whole time loop of rows [j0, j1)."""
    cdef Py_ssize_t GH = G * H, s, j, r, rows
    cdef size_t row_bytes = H * sizeof(floating)
    for s in range(steps.lengths[j0]):
        rows = min(steps.batch_sizes[s], j1) - j0
        rgemm(rows, GH, H, h + j0 * H, H, w_hh_packed, hw + j0 * GH, GH, False)
        for j in range(j0, j0 + rows):
            r = row_at(steps, s, j)
            if h_prev != NULL:
                memcpy(h_prev + r * H, h + j * H, row_bytes)
            if cell == LSTM:
                lstm_forward_step(H, gates + r * GH, hw + j * GH, b_ih, b_hh,
                                  h + j * H, c + j * H, y + r * ldy)
                if saved != NULL:
                    memcpy(saved + r * H, c + j * H, row_bytes)
            elif cell == GRU:
                gru_forward_step(H, gates + r * GH, hw + j * GH, b_ih, b_hh,
                                 h + j * H, y + r * ldy)
                if saved != NULL:
                    memcpy(saved + r * H, hw + j * GH + 2 * H, row_bytes)
            else:
                rnn_forward_step(H, cell == RNN_RELU, gates + r * GH, hw + j * GH,
                                 b_ih, b_hh, h + j * H, y + r * ldy)
                if saved != NULL:
                    memcpy(saved + r * H, h + j * H, row_bytes)


def forward(int cell,
            floating[:, :] y,                   # (N, H) OUT; rows may be strided, elements not
            floating[:, ::1] h_n,               # (B, H) OUT final state (packed order)
            floating[:, ::1] c_n,               # (B, H) OUT LSTM final cell state, else (0, H)
            floating[:, ::1] gates,             # (N, G*H) OUT workspace
            floating[:, ::1] saved,             # (N, H) OUT when training, else (0, H)
            floating[:, ::1] h_prev,            # (N, H) OUT when training, else (0, H)
            const floating[:, ::1] x,           # (N, I) IN
            const floating[:, ::1] weight_ih,   # (G*H, I) IN
            const floating[:, ::1] weight_hh,   # (G*H, H) IN
            const floating[::1] bias_ih,        # (G*H,) IN (zeros without bias)
            const floating[::1] bias_hh,        # (G*H,) IN
            const floating[:, ::1] h_0,         # (B, H) IN
            const floating[:, ::1] c_0,         # (B, H) IN LSTM, else (0, H)
            const Py_ssize_t[::1] batch_sizes,  # (S,) IN non-increasing, batch_sizes[0] = B
            bint reverse, int n_threads):
    """One layer, one direction.  Training (what backward needs is kept in
    gates, saved and h_prev) when h_prev has rows."""
    cdef Py_ssize_t B = h_n.shape[0], H = h_n.shape[1], N = x.shape[0], I = x.shape[1]
    cdef Py_ssize_t GH = gates.shape[1], G = GH // H
    cdef bint training = h_prev.shape[0] > 0
    dtype = np.float32 if floating is float else np.float64
    if y.strides[1] != sizeof(floating):
        raise ValueError("forward: the rows of y must be contiguous")
    offsets, lengths, bounds = _plan(batch_sizes, B, 2.0 * GH * H, n_threads)
    cdef Steps steps = make_steps(batch_sizes, offsets, lengths, reverse)
    cdef Py_ssize_t[::1] bnd = bounds
    cdef Py_ssize_t n_shards = bnd.shape[0] - 1, i
    cdef floating[::1] packed = np.empty(fr_packed_len(GH, H, panel_width(<floating>0)), dtype=dtype)
    cdef floating[:, ::1] hw = np.empty((B, GH), dtype=dtype)
    cdef floating *c_ptr = &c_n[0, 0] if cell == LSTM else NULL
    cdef floating *saved_ptr = &saved[0, 0] if training else NULL
    cdef floating *h_prev_ptr = &h_prev[0, 0] if training else NULL

    blas_pin()
    with nogil:
        gemm_tiled(False, N, GH, I, &x[0, 0], I, &weight_ih[0, 0], I, True,
                   0, &gates[0, 0], GH, n_threads)
        pack_parallel(&packed[0], &weight_hh[0, 0], H, GH, H, True, n_threads)
        memcpy(&h_n[0, 0], &h_0[0, 0], B * H * sizeof(floating))
        if cell == LSTM:
            memcpy(&c_n[0, 0], &c_0[0, 0], B * H * sizeof(floating))
        for i in prange(n_shards, num_threads=n_shards, schedule='static'):
            forward_rows(cell, &steps, bnd[i], bnd[i + 1], H, G,
                         &y[0, 0], y.strides[0] // sizeof(floating),
                         &h_n[0, 0], c_ptr, &gates[0, 0], saved_ptr, h_prev_ptr,
                         &hw[0, 0], &packed[0], &bias_ih[0], &bias_hh[0])
    blas_unpin()


# --- backward -----------------------------------------------------------------

cdef void backward_rows(
        int cell, const Steps *steps, Py_ssize_t j0, Py_ssize_t j1,
        Py_ssize_t H, Py_ssize_t G,
        floating *gates,                   # (N, G*H) INOUT forward's gates in, dxw out
        floating *saved,                   # (N, H) INOUT RNN h', LSTM c' (in); GRU hn in, dhn out
        const floating *h_prev,            # (N, H) IN
        const floating *dy, Py_ssize_t lddy,   # (N, lddy) IN gradient of the outputs
        floating *dh,                      # (B, H) INOUT gradient of the state, rows j0..j1
        floating *dc,                      # (B, H) INOUT LSTM gradient of the cell state
        const floating *c_0,               # (B, H) IN LSTM initial cell state
        floating *dhw,                     # (B, G*H) scratch
        const floating *w_hh_packed) noexcept nogil:  # weight_hh packed by columns
    """The whole backward time loop of rows [j0, j1)."""
    cdef Py_ssize_t GH = G * H, s, j, r
    cdef Py_ssize_t rows
    cdef const floating *c_prev
    for s in range(steps.lengths[j0] - 1, -1, -1):
        rows = min(steps.batch_sizes[s], j1) - j0
        for j in range(j0, j0 + rows):
            r = row_at(steps, s, j)
            if cell == LSTM:
                c_prev = c_0 + j * H if s == 0 else saved + row_at(steps, s - 1, j) * H
                lstm_backward_step(H, gates + r * GH, dhw + j * GH, saved + r * H, c_prev,
                                   dh + j * H, dc + j * H, dy + r * lddy)
            elif cell == GRU:
                gru_backward_step(H, gates + r * GH, dhw + j * GH, saved + r * H,
                                  h_prev + r * H, dh + j * H, dy + r * lddy)
            else:
                rnn_backward_step(H, cell == RNN_RELU, gates + r * GH, dhw + j * GH,
                                  saved + r * H, dh + j * H, dy + r * lddy)
        # dh of the previous step: the GRU adds to its direct part z * dh
        rgemm(rows, H, GH, dhw + j0 * GH, GH, w_hh_packed, dh + j0 * H, H, cell == GRU)


def backward(int cell,
             floating[:, ::1] dx,                # (N, I) OUT, or INOUT when accumulate_dx
             floating[:, ::1] dh_0,              # (B, H) OUT
             floating[:, ::1] dc_0,              # (B, H) OUT LSTM, else (0, H)
             floating[:, ::1] dweight_ih,        # (G*H, I) INOUT
             floating[:, ::1] dweight_hh,        # (G*H, H) INOUT
             floating[::1] dbias_ih,             # (G*H,) INOUT, (0,) without bias
             floating[::1] dbias_hh,             # (G*H,) INOUT, (0,) without bias
             floating[:, ::1] gates,             # (N, G*H) INOUT forward's workspace, consumed
             floating[:, ::1] saved,             # (N, H) INOUT forward's, consumed
             const floating[:, ::1] h_prev,      # (N, H) IN forward's
             const floating[:, :] dy,            # (N, H) IN; rows may be strided, elements not
             const floating[:, ::1] dh_n,        # (B, H) IN
             const floating[:, ::1] dc_n,        # (B, H) IN LSTM, else (0, H)
             const floating[:, ::1] x,           # (N, I) IN forward's input
             const floating[:, ::1] weight_ih,   # (G*H, I) IN
             const floating[:, ::1] weight_hh,   # (G*H, H) IN
             const floating[:, ::1] c_0,         # (B, H) IN LSTM, else (0, H)
             const Py_ssize_t[::1] batch_sizes,  # (S,) IN
             bint reverse, bint accumulate_dx, int n_threads):
    """Backpropagation through time of one forward call (same arguments)."""
    cdef Py_ssize_t B = dh_0.shape[0], H = dh_0.shape[1], N = x.shape[0], I = x.shape[1]
    cdef Py_ssize_t GH = gates.shape[1], G = GH // H
    cdef Py_ssize_t GH_direct = 2 * H if cell == GRU else GH
    cdef bint has_bias = dbias_ih.shape[0] > 0
    dtype = np.float32 if floating is float else np.float64
    if dy.strides[1] != sizeof(floating):
        raise ValueError("backward: the rows of dy must be contiguous")
    offsets, lengths, bounds = _plan(batch_sizes, B, 2.0 * GH * H, n_threads)
    cdef Steps steps = make_steps(batch_sizes, offsets, lengths, reverse)
    cdef Py_ssize_t[::1] bnd = bounds
    cdef Py_ssize_t n_shards = bnd.shape[0] - 1, i
    cdef floating[::1] packed = np.empty(fr_packed_len(H, GH, panel_width(<floating>0)), dtype=dtype)
    cdef floating[:, ::1] dhw = np.empty((B, GH), dtype=dtype)
    cdef floating *saved_ptr = &saved[0, 0]
    cdef floating *dc_ptr = &dc_0[0, 0] if cell == LSTM else NULL
    cdef const floating *c_0_ptr = &c_0[0, 0] if cell == LSTM else NULL

    blas_pin()
    with nogil:
        pack_parallel(&packed[0], &weight_hh[0, 0], H, H, GH, False, n_threads)
        memcpy(&dh_0[0, 0], &dh_n[0, 0], B * H * sizeof(floating))
        if cell == LSTM:
            memcpy(&dc_0[0, 0], &dc_n[0, 0], B * H * sizeof(floating))
        for i in prange(n_shards, num_threads=n_shards, schedule='static'):
            backward_rows(cell, &steps, bnd[i], bnd[i + 1], H, G,
                          &gates[0, 0], saved_ptr, &h_prev[0, 0],
                          &dy[0, 0], dy.strides[0] // sizeof(floating),
                          &dh_0[0, 0], dc_ptr, c_0_ptr, &dhw[0, 0], &packed[0])
        # gates now holds dxw, the gradient of x @ weight_ih.T, for every row;
        # the gradient of h @ weight_hh.T is the same, but for the GRU's n
        # gate, whose part (dhn) is in saved.
        gemm_tiled(False, N, I, GH, &gates[0, 0], GH, &weight_ih[0, 0], I, False,
                   1 if accumulate_dx else 0, &dx[0, 0], I, n_threads)
        gemm_tiled(True, GH, I, N, &gates[0, 0], GH, &x[0, 0], I, False,
                   1, &dweight_ih[0, 0], I, n_threads)
        gemm_tiled(True, GH_direct, H, N, &gates[0, 0], GH, &h_prev[0, 0], H, False,
                   1, &dweight_hh[0, 0], H, n_threads)
        if cell == GRU:
            gemm_tiled(True, H, H, N, saved_ptr, H, &h_prev[0, 0], H, False,
                       1, &dweight_hh[2 * H, 0], H, n_threads)
        if has_bias:
            add_column_sums(&dbias_ih[0], &gates[0, 0], GH, N, GH, n_threads)
            add_column_sums(&dbias_hh[0], &gates[0, 0], GH, N, GH_direct, n_threads)
            if cell == GRU:
                add_column_sums(&dbias_hh[2 * H], saved_ptr, H, N, H, n_threads)
    blas_unpin()
