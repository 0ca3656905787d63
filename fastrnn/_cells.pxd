# The pointwise maths of each cell: one time step of one batch row, forward
# and backward side by side.  Everything else (the time loop, the matrix
# products, the ragged batch, the threads) is shared, in _recurrence.pyx.
#
# Conventions are PyTorch's.  Per row, with G gates of H units each:
#   xw = x @ weight_ih.T + b   (G*H)  input part, with the biases folded in:
#                                      b = bias_ih + bias_hh, but for the GRU's
#                                      n gate, whose bias_hh sits inside r * (.)
#   hw = h @ weight_hh.T       (G*H)  recurrent part, which the time loop's
#                                      product adds to xw in place (the sum the
#                                      pointwise pass would form, the same bits),
#                                      but for the GRU's n gate, kept apart in hw
# Each function handles n units (a thread's share of the H units) of one row:
# its arrays hold gate g of unit u at [g * gs + u], gs the gate stride of the
# layout they come in (a thread's packed layout in the forward, the G*H rows of
# the workspace in the backward).  Single-vector arrays (states, outputs) hold
# unit u at [u].
#
# The forward functions so see xw + hw in xw, and leave the activated gates
# there (the time loop keeps them for backward when training); the time loop
# keeps one more vector per row:
# h' for the RNN, c' for the LSTM, hn for the GRU.  The backward turns the
# saved gates into the gradient of the input part (dxw, whose products with x
# and weight_ih give dx and dweight_ih) and writes the gradient of the
# recurrent part into dhw (whose products with h and weight_hh give dh and
# dweight_hh).
#
# Each loop runs over the units; the compiler vectorises it (the activations
# in csrc/activations.h are branch-free arithmetic).  Constants are written
# <floating>1: Cython turns a bare 1 in `1 - x` into the C double 1.0, and the
# float32 loops then ran in double, converting every element both ways
# (measured, in float: LSTM forward+backward 3-4% faster at B=32, H=128 and
# at B=1, H=64).
from fastrnn._common cimport floating, sigmoid, tanh, relu


cdef inline void sigmoid_in_place(Py_ssize_t n, floating *a) noexcept nogil:
    """a = sigmoid(a), n elements."""
    cdef Py_ssize_t u
    for u in range(n):
        a[u] = sigmoid(a[u])


cdef inline void tanh_in_place(Py_ssize_t n, floating *a) noexcept nogil:
    """a = tanh(a), n elements."""
    cdef Py_ssize_t u
    for u in range(n):
        a[u] = tanh(a[u])


# Elman RNN: h' = act(xw + hw), act = tanh or relu -------------------------

cdef inline void rnn_forward_step(
        Py_ssize_t n, bint use_relu,
        const floating *xw,          # (n) IN xw + hw
        floating *h,                 # (n) OUT new state h'
        floating *y) noexcept nogil:  # (n) OUT h'
    cdef Py_ssize_t u
    cdef floating v
    for u in range(n):
        v = relu(xw[u]) if use_relu else tanh(xw[u])
        h[u] = v
        y[u] = v


cdef inline void rnn_backward_step(
        Py_ssize_t n, bint use_relu,
        floating *gates,             # (n) OUT dxw
        floating *dhw,               # (n) OUT
        const floating *saved,       # (n) IN h' (the activation's output)
        const floating *dh,          # (n) IN gradient reaching h' from later steps
        const floating *dy) noexcept nogil:  # (n) IN gradient of the output at this step
    cdef Py_ssize_t u
    cdef floating d
    for u in range(n):
        d = dh[u] + dy[u]
        if use_relu:
            d = d if saved[u] > 0 else 0
        else:
            d = d * (<floating>1 - saved[u] * saved[u])
        gates[u] = d
        dhw[u] = d


# LSTM, gates i, f, g, o ------------------------------------------------------
#   i = sigmoid(.), f = sigmoid(.), g = tanh(.), o = sigmoid(.)
#   c' = f * c + i * g ;  h' = o * tanh(c')

cdef inline void lstm_forward_step(
        Py_ssize_t n, Py_ssize_t gs,
        floating *xw,                # (4 gs) IN xw + hw, OUT i, f, g, o
        floating *c,                 # (n) INOUT cell state
        floating *h,                 # (n) OUT new state h'
        floating *y) noexcept nogil:  # (n) OUT h'
    # one pass per gate, then the state: each loop keeps one activation's
    # constants in registers (in one fused loop gcc spilled them to the stack;
    # measured, 2 threads: 4-5% faster at B=8 and 32, H=128; 10% at B=1, H=64)
    cdef Py_ssize_t u
    cdef floating c_new, h_new
    sigmoid_in_place(n, xw)
    sigmoid_in_place(n, xw + gs)
    tanh_in_place(n, xw + 2 * gs)
    sigmoid_in_place(n, xw + 3 * gs)
    for u in range(n):
        c_new = xw[gs + u] * c[u] + xw[u] * xw[2 * gs + u]
        h_new = xw[3 * gs + u] * tanh(c_new)
        c[u] = c_new
        h[u] = h_new
        y[u] = h_new


cdef inline void lstm_backward_step(
        Py_ssize_t n, Py_ssize_t gs,
        floating *gates,             # (4 gs) IN i, f, g, o ; OUT dxw
        floating *dhw,               # (4 gs) OUT (equal to dxw)
        const floating *c,           # (n) IN c' of this step
        const floating *c_prev,      # (n) IN c of the previous step
        const floating *dh,          # (n) IN gradient reaching h' from later steps
        floating *dc,                # (n) INOUT gradient of c': in from later steps, out for c
        const floating *dy) noexcept nogil:  # (n) IN
    cdef Py_ssize_t u
    cdef floating i, f, g, o, tc, dh_t, dc_t, di, df, dg, do
    for u in range(n):
        i = gates[u]
        f = gates[gs + u]
        g = gates[2 * gs + u]
        o = gates[3 * gs + u]
        tc = tanh(c[u])
        dh_t = dh[u] + dy[u]
        dc_t = dc[u] + dh_t * o * (<floating>1 - tc * tc)
        di = dc_t * g * i * (<floating>1 - i)
        df = dc_t * c_prev[u] * f * (<floating>1 - f)
        dg = dc_t * i * (<floating>1 - g * g)
        do = dh_t * tc * o * (<floating>1 - o)
        dc[u] = dc_t * f
        gates[u] = di
        gates[gs + u] = df
        gates[2 * gs + u] = dg
        gates[3 * gs + u] = do
        dhw[u] = di
        dhw[gs + u] = df
        dhw[2 * gs + u] = dg
        dhw[3 * gs + u] = do


# GRU, gates r, z, n ----------------------------------------------------------
#   r = sigmoid(xw_r + hw_r), z = sigmoid(xw_z + hw_z), hn = hw_n + b_hn
#   nn = tanh(xw_n + r * hn) ;  h' = nn + z * (h - nn)  (= (1 - z) nn + z h)

cdef inline void gru_forward_step(
        Py_ssize_t n, Py_ssize_t gs,
        floating *xw,                # (3 gs) IN xw + hw (but the n gate: xw), OUT r, z, n
        floating *hw_n,              # (n) IN hw of the n gate ; OUT hn
        const floating *b_hn,        # (n) IN bias_hh of the n gate
        const floating *h_prev,      # (n) IN state h
        floating *h,                 # (n) OUT new state h'
        floating *y) noexcept nogil:  # (n) OUT h'
    cdef Py_ssize_t u
    cdef floating hn, nn, h_new
    # the sigmoids in passes of their own, as the LSTM's (measured: 4% faster)
    sigmoid_in_place(n, xw)          # r
    sigmoid_in_place(n, xw + gs)     # z
    for u in range(n):
        hn = hw_n[u] + b_hn[u]
        nn = tanh(xw[2 * gs + u] + xw[u] * hn)
        h_new = nn + xw[gs + u] * (h_prev[u] - nn)
        xw[2 * gs + u] = nn
        hw_n[u] = hn
        h[u] = h_new
        y[u] = h_new


cdef inline void gru_backward_step(
        Py_ssize_t n, Py_ssize_t gs,
        floating *gates,             # (3 gs) IN r, z, n ; OUT dxw
        floating *dhw,               # (3 gs) OUT
        floating *saved,             # (n) IN hn ; OUT dhn (the gradient of hw_n + b_hn)
        const floating *h_prev,      # (n) IN h of the previous step
        floating *dh,                # (n) INOUT: in gradient reaching h', out its direct part for h
        const floating *dy) noexcept nogil:  # (n) IN
    cdef Py_ssize_t u
    cdef floating r, z, nn, hn, dh_t, dn, dr, dz, dhn
    for u in range(n):
        r = gates[u]
        z = gates[gs + u]
        nn = gates[2 * gs + u]
        hn = saved[u]
        dh_t = dh[u] + dy[u]
        dn = dh_t * (<floating>1 - z) * (<floating>1 - nn * nn)
        dz = dh_t * (h_prev[u] - nn) * z * (<floating>1 - z)
        dr = dn * hn * r * (<floating>1 - r)
        dhn = dn * r
        dh[u] = dh_t * z
        gates[u] = dr
        gates[gs + u] = dz
        gates[2 * gs + u] = dn
        dhw[u] = dr
        dhw[gs + u] = dz
        dhw[2 * gs + u] = dhn
        saved[u] = dhn


# GRU with the reset applied before the recurrent product (Keras's
# reset_after=False, ONNX's linear_before_reset=0), gates r, z, n:
#   r = sigmoid(xw_r + hw_r), z = sigmoid(xw_z + hw_z), rh = r * h
#   nn = tanh(xw_n + rh @ W_hn.T) ;  h' = nn + z * (h - nn)
# Every bias is folded into xw.  The n gate's product needs r * h of every
# unit, so a step has two phases, the reset (r, z, rh) then the state, with
# the threads meeting in between; its backward likewise: first dz and dn,
# then, once d(rh) = dn @ W_hn is known, dr.

cdef inline void gru_reset_before_reset_step(
        Py_ssize_t n, Py_ssize_t gs,
        floating *xw,                # (3 gs) IN xw + hw in the first two gates ; OUT r, z there
        const floating *h_prev,      # (n) IN state h
        floating *rh) noexcept nogil:  # (n) OUT r * h
    cdef Py_ssize_t u
    cdef floating r
    for u in range(n):
        r = sigmoid(xw[u])
        xw[u] = r
        xw[gs + u] = sigmoid(xw[gs + u])
        rh[u] = r * h_prev[u]


cdef inline void gru_reset_before_forward_step(
        Py_ssize_t n, Py_ssize_t gs,
        floating *xw,                # (3 gs) IN r, z, xw_n + rh @ W_hn.T ; OUT r, z, n
        const floating *h_prev,      # (n) IN state h
        floating *h,                 # (n) OUT new state h'
        floating *y) noexcept nogil:  # (n) OUT h'
    cdef Py_ssize_t u
    cdef floating z, nn, h_new
    for u in range(n):
        z = xw[gs + u]
        nn = tanh(xw[2 * gs + u])
        h_new = nn + z * (h_prev[u] - nn)
        xw[2 * gs + u] = nn
        h[u] = h_new
        y[u] = h_new


cdef inline void gru_reset_before_backward_step(
        Py_ssize_t n, Py_ssize_t gs,
        floating *gates,             # (3 gs) IN r, z, n ; OUT r, dz, dn
        floating *dhw,               # (3 gs) OUT dz, dn in the last two gates
        const floating *h_prev,      # (n) IN h of the previous step
        floating *dh,                # (n) INOUT: in gradient reaching h', out its part z * dh for h
        const floating *dy) noexcept nogil:  # (n) IN
    cdef Py_ssize_t u
    cdef floating z, nn, dh_t, dn, dz
    for u in range(n):
        z = gates[gs + u]
        nn = gates[2 * gs + u]
        dh_t = dh[u] + dy[u]
        dn = dh_t * (<floating>1 - z) * (<floating>1 - nn * nn)
        dz = dh_t * (h_prev[u] - nn) * z * (<floating>1 - z)
        dh[u] = dh_t * z
        gates[gs + u] = dz
        gates[2 * gs + u] = dn
        dhw[gs + u] = dz
        dhw[2 * gs + u] = dn


cdef inline void gru_reset_before_reset_backward_step(
        Py_ssize_t n, Py_ssize_t gs,
        floating *gates,             # (gs) IN r ; OUT dr
        floating *dhw,               # (gs) OUT dr
        const floating *drh,         # (n) IN gradient of r * h (dn @ W_hn)
        const floating *h_prev,      # (n) IN
        floating *dh) noexcept nogil:  # (n) INOUT: adds the part r * drh for h
    cdef Py_ssize_t u
    cdef floating r, dr
    for u in range(n):
        r = gates[u]
        dr = drh[u] * h_prev[u] * r * (<floating>1 - r)
        dh[u] += drh[u] * r
        gates[u] = dr
        dhw[u] = dr
