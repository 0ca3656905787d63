"""A plain float64 NumPy reference of fastrnn's layers: the oracle of the tests.

Written for clarity, not speed: one sequence at a time, one step at a time, a
forward loop that keeps what the backward needs, a backward loop that carries
dh_next (and dc_next) back through time.  Conventions are PyTorch's: gate
orders LSTM (i, f, g, o) and GRU (r, z, n), parameter names
weight_ih_l{k}[_reverse] etc.  Nothing here imports fastrnn.
"""
import numpy as np

GATES = {"RNN_TANH": 1, "RNN_RELU": 1, "LSTM": 4, "GRU": 3, "GRU_RESET_BEFORE": 3}


def sigmoid(v):
    return 1.0 / (1.0 + np.exp(-v))


# --- one step of one sequence --------------------------------------------------

def cell_forward(mode, x, h, c, w_ih, w_hh, b_ih, b_hh):
    """x (I,), h (H,), c (H,) or None -> h', c', cache for cell_backward."""
    H = h.shape[0]
    xw = w_ih @ x + b_ih
    hw = w_hh @ h + b_hh
    if mode in ("RNN_TANH", "RNN_RELU"):
        pre = xw + hw
        h_new = np.tanh(pre) if mode == "RNN_TANH" else np.maximum(pre, 0.0)
        return h_new, None, (x, h, h_new)
    if mode == "LSTM":
        pre = xw + hw
        i, f = sigmoid(pre[:H]), sigmoid(pre[H:2 * H])
        g, o = np.tanh(pre[2 * H:3 * H]), sigmoid(pre[3 * H:])
        c_new = f * c + i * g
        h_new = o * np.tanh(c_new)
        return h_new, c_new, (x, h, c, i, f, g, o, c_new)
    if mode == "GRU":
        r = sigmoid(xw[:H] + hw[:H])
        z = sigmoid(xw[H:2 * H] + hw[H:2 * H])
        n = np.tanh(xw[2 * H:] + r * hw[2 * H:])
        h_new = (1 - z) * n + z * h
        return h_new, None, (x, h, r, z, n, hw[2 * H:])
    if mode == "GRU_RESET_BEFORE":   # the reset multiplies h before the product
        r = sigmoid(xw[:H] + hw[:H])
        z = sigmoid(xw[H:2 * H] + hw[H:2 * H])
        n = np.tanh(xw[2 * H:] + w_hh[2 * H:] @ (r * h) + b_hh[2 * H:])
        h_new = (1 - z) * n + z * h
        return h_new, None, (x, h, r, z, n, None)
    raise ValueError(mode)


def cell_backward(mode, dh, dc, cache, w_ih, w_hh, grads):
    """Gradient of one step: dh (H,) and dc reach h' and c'.  Adds the
    parameter gradients into grads; returns dx, dh_prev, dc_prev."""
    if mode in ("RNN_TANH", "RNN_RELU"):
        x, h, h_new = cache
        dpre = dh * (1 - h_new ** 2) if mode == "RNN_TANH" else dh * (h_new > 0)
        dxw = dhw = dpre
        dc_prev = None
    elif mode == "LSTM":
        x, h, c, i, f, g, o, c_new = cache
        tc = np.tanh(c_new)
        do = dh * tc
        dc = dc + dh * o * (1 - tc ** 2)
        di, df, dg = dc * g, dc * c, dc * i
        dc_prev = dc * f
        dxw = dhw = np.concatenate([di * i * (1 - i), df * f * (1 - f),
                                    dg * (1 - g ** 2), do * o * (1 - o)])
    elif mode == "GRU":
        x, h, r, z, n, hn = cache
        dn = dh * (1 - z) * (1 - n ** 2)
        dz = dh * (h - n) * z * (1 - z)
        dr = dn * hn * r * (1 - r)
        dxw = np.concatenate([dr, dz, dn])
        dhw = np.concatenate([dr, dz, dn * r])
        dc_prev = None
    elif mode == "GRU_RESET_BEFORE":
        x, h, r, z, n, _ = cache
        H = h.shape[0]
        dn = dh * (1 - z) * (1 - n ** 2)
        dz = dh * (h - n) * z * (1 - z)
        drh = w_hh[2 * H:].T @ dn
        dr = drh * h * r * (1 - r)
        dxw = dhw = np.concatenate([dr, dz, dn])
        grads["weight_ih"] += np.outer(dxw, x)
        grads["weight_hh"][:2 * H] += np.outer(dxw[:2 * H], h)
        grads["weight_hh"][2 * H:] += np.outer(dn, r * h)
        grads["bias_ih"] += dxw
        grads["bias_hh"] += dxw
        dh_prev = w_hh[:2 * H].T @ dxw[:2 * H] + drh * r + dh * z
        return w_ih.T @ dxw, dh_prev, None
    grads["weight_ih"] += np.outer(dxw, x)
    grads["weight_hh"] += np.outer(dhw, h)
    grads["bias_ih"] += dxw
    grads["bias_hh"] += dhw
    dx = w_ih.T @ dxw
    dh_prev = w_hh.T @ dhw
    if mode == "GRU":
        dh_prev = dh_prev + dh * z
    return dx, dh_prev, dc_prev


# --- one layer, one direction ----------------------------------------------------

def layer_forward(mode, x, h0, c0, p, lengths, reverse):
    """x (T, B, I) -> y (T, B, H) (zero past each length), h_n, c_n, tape."""
    T, B, _ = x.shape
    H = h0.shape[1]
    y = np.zeros((T, B, H))
    h_n, c_n = np.zeros((B, H)), np.zeros((B, H))
    tape = []
    for b in range(B):
        times = range(lengths[b])
        if reverse:
            times = reversed(times)
        h, c = h0[b], (c0[b] if c0 is not None else None)
        steps = []
        for t in times:
            h, c, cache = cell_forward(mode, x[t, b], h, c, p["weight_ih"], p["weight_hh"],
                                       p["bias_ih"], p["bias_hh"])
            y[t, b] = h
            steps.append((t, cache))
        h_n[b] = h
        if c is not None:
            c_n[b] = c
        tape.append(steps)
    return y, h_n, c_n, tape


def layer_backward(mode, dy, dh_n, dc_n, tape, p, input_size):
    """dy (T, B, H) -> dx (T, B, I), dh_0, dc_0, parameter grads."""
    T, B, H = dy.shape
    grads = {name: np.zeros_like(value) for name, value in p.items()}
    dx = np.zeros((T, B, input_size))
    dh_0, dc_0 = np.zeros((B, H)), np.zeros((B, H))
    for b in range(B):
        dh_next, dc_next = dh_n[b].copy(), dc_n[b].copy()
        for t, cache in reversed(tape[b]):
            dx[t, b], dh_next, dc_next = cell_backward(
                mode, dh_next + dy[t, b], dc_next, cache, p["weight_ih"], p["weight_hh"], grads)
        dh_0[b] = dh_next
        if dc_next is not None:
            dc_0[b] = dc_next
    return dx, dh_0, dc_0, grads


# --- a stacked, possibly bidirectional layer ----------------------------------------

def suffix(layer, direction):
    return f"_l{layer}" + ("_reverse" if direction == 1 else "")


def forward(mode, params, x, h0, c0=None, lengths=None, num_layers=1, bidirectional=False,
            dropout_masks=None):
    """x (T, B, I); h0, c0 (L*D, B, H); params with PyTorch's names.
    dropout_masks[k] (T, B, D*H) multiplies the output of layer k (k < L-1).
    Returns y (T, B, D*H), h_n, c_n and a tape for backward."""
    T, B, _ = x.shape
    D = 2 if bidirectional else 1
    lengths = np.full(B, T) if lengths is None else np.asarray(lengths)
    h_n, c_n = np.zeros_like(h0), np.zeros_like(h0)
    inp, tapes = x, []
    for k in range(num_layers):
        outs = []
        for d in range(D):
            p = {name: params[name + suffix(k, d)] for name in
                 ("weight_ih", "weight_hh", "bias_ih", "bias_hh")}
            i = k * D + d
            y, h_n[i], c_n[i], tape = layer_forward(
                mode, inp, h0[i], None if c0 is None else c0[i], p, lengths, reverse=d == 1)
            outs.append(y)
            tapes.append((k, d, p, inp.shape[2], tape))
        inp = np.concatenate(outs, axis=2)
        if dropout_masks is not None and k < num_layers - 1:
            inp = inp * dropout_masks[k]
    return inp, h_n, (c_n if mode == "LSTM" else None), (tapes, dropout_masks, D, num_layers)


def backward(mode, tape, dy, dh_n, dc_n=None):
    """Gradients of forward: dx, dh_0, dc_0 and the parameter gradients."""
    tapes, dropout_masks, D, num_layers = tape
    H = dh_n.shape[2]
    dc_n = np.zeros_like(dh_n) if dc_n is None else dc_n
    grads, dh_0, dc_0 = {}, np.zeros_like(dh_n), np.zeros_like(dh_n)
    d_out = dy
    for k in reversed(range(num_layers)):
        if dropout_masks is not None and k < num_layers - 1:
            d_out = d_out * dropout_masks[k]
        d_in = 0
        for (kk, d, p, input_size, layer_tape) in tapes:
            if kk != k:
                continue
            i = k * D + d
            dx, dh_0[i], dc_0[i], g = layer_backward(
                mode, d_out[:, :, d * H:(d + 1) * H], dh_n[i], dc_n[i], layer_tape, p, input_size)
            d_in = d_in + dx
            for name, value in g.items():
                grads[name + suffix(k, d)] = value
        d_out = d_in
    return d_out, dh_0, (dc_0 if mode == "LSTM" else None), grads


def init_params(mode, input_size, hidden_size, num_layers=1, bidirectional=False, rng=None):
    """Random parameters with PyTorch's names, uniform in +-1/sqrt(H)."""
    rng = np.random.default_rng(0) if rng is None else rng
    G, D, k = GATES[mode], 2 if bidirectional else 1, 1 / np.sqrt(hidden_size)
    params = {}
    for layer in range(num_layers):
        for d in range(D):
            i_size = input_size if layer == 0 else D * hidden_size
            s = suffix(layer, d)
            params["weight_ih" + s] = rng.uniform(-k, k, (G * hidden_size, i_size))
            params["weight_hh" + s] = rng.uniform(-k, k, (G * hidden_size, hidden_size))
            params["bias_ih" + s] = rng.uniform(-k, k, G * hidden_size)
            params["bias_hh" + s] = rng.uniform(-k, k, G * hidden_size)
    return params
