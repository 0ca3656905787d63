# The pointwise maths of each cell: one time step of one batch row, forward
# and backward side by side.  Everything else (the time loop, the matrix
# products, the ragged batch, the threads) is shared, in _recurrence.pyx.
#
# Conventions are PyTorch's.  Per row, with G gates of H units each:
#   xw = x @ weight_ih.T   (G*H)  input part, computed for all steps at once
#   hw = h @ weight_hh.T   (G*H)  recurrent part, computed once per step
# The forward writes what its backward needs into `gates` (the row of xw,
# which is not needed any more), and the time loop copies one more vector per
# row into `saved` (H): h' for the RNN, c' for the LSTM, hn for the GRU.
# The backward turns `gates` into the gradient of the input part (dxw, whose
# products with x and weight_ih give dx and dweight_ih) and writes the
# gradient of the recurrent part into `dhw` (whose products with h and
# weight_hh give dh and dweight_hh).
#
# Each loop runs over the H units of the row; the compiler vectorises it (the
# activations in csrc/activations.h are branch-free arithmetic).
from fastrnn._common cimport floating, sigmoid, tanh, relu


# Elman RNN: h' = act(xw + b_ih + hw + b_hh), act = tanh or relu ------------

cdef inline void rnn_forward_step(
        Py_ssize_t H, bint use_relu,
        floating *gates,             # (H) IN xw
        const floating *hw,          # (H) IN
        const floating *b_ih,        # (H) IN
        const floating *b_hh,        # (H) IN
        floating *h,                 # (H) INOUT state: h in, h' out
        floating *y) noexcept nogil:  # (H) OUT h'
    cdef Py_ssize_t u
    cdef floating v
    for u in range(H):
        v = (gates[u] + b_ih[u]) + (hw[u] + b_hh[u])
        v = relu(v) if use_relu else tanh(v)
        h[u] = v
        y[u] = v


cdef inline void rnn_backward_step(
        Py_ssize_t H, bint use_relu,
        floating *gates,             # (H) OUT dxw
        floating *dhw,               # (H) OUT
        const floating *saved,       # (H) IN h' (the activation's output)
        const floating *dh,          # (H) IN gradient reaching h' from later steps
        const floating *dy) noexcept nogil:  # (H) IN gradient of the output at this step
    cdef Py_ssize_t u
    cdef floating d
    for u in range(H):
        d = dh[u] + dy[u]
        if use_relu:
            d = d if saved[u] > 0 else 0
        else:
            d = d * (1 - saved[u] * saved[u])
        gates[u] = d
        dhw[u] = d


# LSTM, gates i, f, g, o ------------------------------------------------------
#   i = sigmoid(.), f = sigmoid(.), g = tanh(.), o = sigmoid(.)
#   c' = f * c + i * g ;  h' = o * tanh(c')

cdef inline void lstm_forward_step(
        Py_ssize_t H,
        floating *gates,             # (4H) IN xw, OUT i, f, g, o
        const floating *hw,          # (4H) IN
        const floating *b_ih,        # (4H) IN
        const floating *b_hh,        # (4H) IN
        floating *h,                 # (H) INOUT state
        floating *c,                 # (H) INOUT cell state
        floating *y) noexcept nogil:  # (H) OUT h'
    cdef Py_ssize_t u
    cdef floating i, f, g, o, c_new, h_new
    for u in range(H):
        i = sigmoid((gates[u] + b_ih[u]) + (hw[u] + b_hh[u]))
        f = sigmoid((gates[H + u] + b_ih[H + u]) + (hw[H + u] + b_hh[H + u]))
        g = tanh((gates[2 * H + u] + b_ih[2 * H + u]) + (hw[2 * H + u] + b_hh[2 * H + u]))
        o = sigmoid((gates[3 * H + u] + b_ih[3 * H + u]) + (hw[3 * H + u] + b_hh[3 * H + u]))
        c_new = f * c[u] + i * g
        h_new = o * tanh(c_new)
        gates[u] = i
        gates[H + u] = f
        gates[2 * H + u] = g
        gates[3 * H + u] = o
        c[u] = c_new
        h[u] = h_new
        y[u] = h_new


cdef inline void lstm_backward_step(
        Py_ssize_t H,
        floating *gates,             # (4H) IN i, f, g, o ; OUT dxw
        floating *dhw,               # (4H) OUT (equal to dxw)
        const floating *c,           # (H) IN c' of this step
        const floating *c_prev,      # (H) IN c of the previous step
        const floating *dh,          # (H) IN gradient reaching h' from later steps
        floating *dc,                # (H) INOUT gradient of c': in from later steps, out for c
        const floating *dy) noexcept nogil:  # (H) IN
    cdef Py_ssize_t u
    cdef floating i, f, g, o, tc, dh_t, dc_t, di, df, dg, do
    for u in range(H):
        i = gates[u]
        f = gates[H + u]
        g = gates[2 * H + u]
        o = gates[3 * H + u]
        tc = tanh(c[u])
        dh_t = dh[u] + dy[u]
        dc_t = dc[u] + dh_t * o * (1 - tc * tc)
        di = dc_t * g * i * (1 - i)
        df = dc_t * c_prev[u] * f * (1 - f)
        dg = dc_t * i * (1 - g * g)
        do = dh_t * tc * o * (1 - o)
        dc[u] = dc_t * f
        gates[u] = di
        gates[H + u] = df
        gates[2 * H + u] = dg
        gates[3 * H + u] = do
        dhw[u] = di
        dhw[H + u] = df
        dhw[2 * H + u] = dg
        dhw[3 * H + u] = do


# GRU, gates r, z, n ----------------------------------------------------------
#   r = sigmoid(.), z = sigmoid(.), hn = hw_n + b_hn
#   n = tanh(xw_n + b_in + r * hn) ;  h' = n + z * (h - n)  (= (1 - z) n + z h)

cdef inline void gru_forward_step(
        Py_ssize_t H,
        floating *gates,             # (3H) IN xw, OUT r, z, n
        floating *hw,                # (3H) IN ; OUT hn in its last H entries
        const floating *b_ih,        # (3H) IN
        const floating *b_hh,        # (3H) IN
        floating *h,                 # (H) INOUT state
        floating *y) noexcept nogil:  # (H) OUT h'
    cdef Py_ssize_t u
    cdef floating r, z, hn, n, h_new
    for u in range(H):
        r = sigmoid((gates[u] + b_ih[u]) + (hw[u] + b_hh[u]))
        z = sigmoid((gates[H + u] + b_ih[H + u]) + (hw[H + u] + b_hh[H + u]))
        hn = hw[2 * H + u] + b_hh[2 * H + u]
        n = tanh((gates[2 * H + u] + b_ih[2 * H + u]) + r * hn)
        h_new = n + z * (h[u] - n)
        gates[u] = r
        gates[H + u] = z
        gates[2 * H + u] = n
        hw[2 * H + u] = hn
        h[u] = h_new
        y[u] = h_new


cdef inline void gru_backward_step(
        Py_ssize_t H,
        floating *gates,             # (3H) IN r, z, n ; OUT dxw
        floating *dhw,               # (3H) OUT
        floating *saved,             # (H) IN hn ; OUT dhn (the gradient of hw_n + b_hn)
        const floating *h_prev,      # (H) IN h of the previous step
        floating *dh,                # (H) INOUT: in gradient reaching h', out its direct part for h
        const floating *dy) noexcept nogil:  # (H) IN
    cdef Py_ssize_t u
    cdef floating r, z, n, hn, dh_t, dn, dr, dz, dhn
    for u in range(H):
        r = gates[u]
        z = gates[H + u]
        n = gates[2 * H + u]
        hn = saved[u]
        dh_t = dh[u] + dy[u]
        dn = dh_t * (1 - z) * (1 - n * n)
        dz = dh_t * (h_prev[u] - n) * z * (1 - z)
        dr = dn * hn * r * (1 - r)
        dhn = dn * r
        dh[u] = dh_t * z
        gates[u] = dr
        gates[H + u] = dz
        gates[2 * H + u] = dn
        dhw[u] = dr
        dhw[H + u] = dz
        dhw[2 * H + u] = dhn
        saved[u] = dhn
