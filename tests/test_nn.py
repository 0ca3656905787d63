"""The training toolkit: Linear, Embedding, Dropout, Sequential, losses,
optimisers, saving and loading.  Finite differences for every gradient, and
parity with PyTorch's modules, losses and optimisers."""
import json
import zipfile

import numpy as np
import pytest

import fastrnn
import fastrnn._kernels
from fastrnn import nn, optim
from conftest import require
from test_gradcheck import numeric_gradient

torch = require("torch")


# --- finite differences ----------------------------------------------------------

def test_linear_finite_differences():
    rng = np.random.default_rng(0)
    lin = nn.Linear(5, 4, dtype=np.float64, seed=1)
    x = rng.standard_normal((2, 3, 5))
    w = rng.standard_normal((2, 3, 4))
    loss = lambda: float(np.sum(lin.eval()(x) * w))
    lin.train()
    lin(x)
    dx = lin.backward(w)
    np.testing.assert_allclose(dx, numeric_gradient(loss, x), rtol=1e-7, atol=1e-8)
    for name in ("weight", "bias"):
        np.testing.assert_allclose(lin.grads[name], numeric_gradient(loss, lin.params[name]), rtol=1e-7, atol=1e-8)


@pytest.fixture(params=[False, True], ids=["narrow_kernels", "wide_kernels"])
def wide_kernels(request):
    """Both sets of product kernels, whichever this CPU uses by default."""
    recurrence = fastrnn._kernels.recurrence
    previous = recurrence.wide_kernels(request.param)
    if recurrence.wide_kernels() != request.param:
        recurrence.wide_kernels(previous)
        pytest.skip("this build has no wide kernels (AVX-512 only)")
    yield request.param
    recurrence.wide_kernels(previous)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_product_kernels_for_every_row_count(dtype, wide_kernels):
    """Linear's forward is the packed product kernel alone (csrc/rgemm.h):
    every number of rows from 1 to 40 (blocks of 12 or 6 rows, the 1-5 rows
    left over, one to four panels a call), widths of one to ten panels
    (partial ones too), against NumPy in float64, and each row bitwise equal
    to the same row computed alone, whatever kernel shape it fell in."""
    rng = np.random.default_rng(5)
    for n_in, n_out in ((7, 300), (64, 33), (130, 257)):
        lin = nn.Linear(n_in, n_out, dtype=dtype, seed=n_out)
        lin.eval()
        w, b = lin.params["weight"].astype(np.float64), lin.params["bias"].astype(np.float64)
        x = rng.standard_normal((40, n_in)).astype(dtype)
        tol = dict(rtol=1e-4, atol=1e-5) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-12)
        for m in range(1, 41):
            y = lin(x[:m])
            np.testing.assert_allclose(y, x[:m].astype(np.float64) @ w.T + b, **tol)
            alone = lin(x[m - 1:m])
            assert np.array_equal(y[m - 1:m], alone), f"row {m - 1} of {m} differs from the row alone"


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_linear_dx_of_few_rows_gives_the_bits_of_more(dtype):
    """Linear's dx of one or two rows (float32) reads the weight where it is
    (fr_cols_product_f32) rather than packed by columns: each row of dx has
    the bits of the same row among 40 (widths of one to ten panels, partial
    ones too)."""
    rng = np.random.default_rng(6)
    for n_in, n_out in ((7, 300), (64, 33), (130, 257)):
        lin = nn.Linear(n_in, n_out, dtype=dtype, seed=n_out)
        x = rng.standard_normal((40, n_in)).astype(dtype)
        dy = rng.standard_normal((40, n_out)).astype(dtype)
        lin(x)
        dx = lin.backward(dy)
        for rows in (slice(0, 1), slice(5, 7), slice(39, 40), slice(0, 3)):
            lin(x[rows])
            assert np.array_equal(lin.backward(dy[rows]), dx[rows]), f"dx of rows {rows}"


def test_embedding_gradient_accumulates_into_used_rows():
    emb = nn.Embedding(6, 3, dtype=np.float64, seed=0)
    ids = np.array([[1, 4, 1], [0, 1, 4]])
    dy = np.random.default_rng(1).standard_normal((2, 3, 3))
    out = emb(ids)
    np.testing.assert_array_equal(out, emb.params["weight"][ids])
    assert emb.backward(dy) is None
    want = np.zeros((6, 3))
    for idx, row in zip(ids.ravel(), dy.reshape(-1, 3)):
        want[idx] += row
    np.testing.assert_allclose(emb.grads["weight"], want)
    loss = lambda: float(np.sum(emb.eval()(ids) * dy))
    np.testing.assert_allclose(emb.grads["weight"], numeric_gradient(loss, emb.params["weight"]), atol=1e-8)


LOSS_CASES = {
    "mse": lambda x, rng: nn.mse_loss(x, rng.standard_normal(x.shape)),
    "ce": lambda x, rng: nn.cross_entropy(x, rng.integers(0, x.shape[-1], x.shape[:-1])),
    "ce_ignore_mask_weight_smooth": lambda x, rng: nn.cross_entropy(
        x, np.where(rng.random(x.shape[:-1]) < 0.3, -100, rng.integers(0, x.shape[-1], x.shape[:-1])),
        weight=rng.uniform(0.5, 2, x.shape[-1]), mask=rng.uniform(0, 1, x.shape[:-1]), label_smoothing=0.1),
    "bce": lambda x, rng: nn.binary_cross_entropy_with_logits(x, rng.uniform(0, 1, x.shape),
                                                              weight=rng.uniform(0.5, 2, x.shape),
                                                              pos_weight=rng.uniform(0.5, 2, x.shape[-1])),
}


@pytest.mark.parametrize("case", list(LOSS_CASES))
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_loss_finite_differences(case, reduction):
    x = np.random.default_rng(2).standard_normal((3, 4, 5))
    fn = LOSS_CASES[case]

    def value():
        return fn(x, np.random.default_rng(3))[0] if reduction == "mean" else _with_sum(fn, x)[0]

    def _with_sum(f, a):
        # the same draws, reduction "sum"
        rng = np.random.default_rng(3)
        args = {"mse": lambda: nn.mse_loss(a, rng.standard_normal(a.shape), reduction="sum"),
                "ce": lambda: nn.cross_entropy(a, rng.integers(0, a.shape[-1], a.shape[:-1]), reduction="sum"),
                "ce_ignore_mask_weight_smooth": lambda: nn.cross_entropy(
                    a, np.where(rng.random(a.shape[:-1]) < 0.3, -100, rng.integers(0, a.shape[-1], a.shape[:-1])),
                    weight=rng.uniform(0.5, 2, a.shape[-1]), mask=rng.uniform(0, 1, a.shape[:-1]),
                    label_smoothing=0.1, reduction="sum"),
                "bce": lambda: nn.binary_cross_entropy_with_logits(
                    a, rng.uniform(0, 1, a.shape), weight=rng.uniform(0.5, 2, a.shape),
                    pos_weight=rng.uniform(0.5, 2, a.shape[-1]), reduction="sum")}
        return args[case]()

    analytic = fn(x, np.random.default_rng(3))[1] if reduction == "mean" else _with_sum(fn, x)[1]
    np.testing.assert_allclose(analytic, numeric_gradient(value, x), rtol=1e-6, atol=1e-8)


def test_whole_model_finite_differences():
    """embedding -> 2-layer LSTM -> linear -> cross-entropy, every parameter."""
    rng = np.random.default_rng(4)
    model = nn.Sequential(nn.Embedding(7, 3, dtype=np.float64, seed=1),
                          fastrnn.LSTM(3, 4, num_layers=2, batch_first=True, dtype=np.float64, seed=2),
                          nn.Linear(4, 7, dtype=np.float64, seed=3))
    ids = rng.integers(0, 7, (2, 5))
    targets = rng.integers(0, 7, (2, 5))

    def loss():
        return nn.cross_entropy(model.eval()(ids), targets)[0]

    model.train()
    value, dlogits = nn.cross_entropy(model(ids), targets)
    model.backward(dlogits)
    assert value == pytest.approx(loss())
    for name, param in model.params.items():
        np.testing.assert_allclose(model.grads[name], numeric_gradient(loss, param), rtol=1e-6, atol=1e-8,
                                   err_msg=name)


# --- PyTorch parity ------------------------------------------------------------------

def t(a, grad=False):
    return torch.tensor(np.asarray(a), requires_grad=grad)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_losses_match_torch(reduction):
    rng = np.random.default_rng(5)
    F = torch.nn.functional
    x = rng.standard_normal((4, 6, 5))
    # mse
    y = rng.standard_normal(x.shape)
    got, dgot = nn.mse_loss(x, y, reduction=reduction)
    xt = t(x, True)
    want = F.mse_loss(xt, t(y), reduction=reduction)
    want.sum().backward()
    np.testing.assert_allclose(got, want.detach().numpy(), rtol=1e-12)
    if reduction != "none":
        np.testing.assert_allclose(dgot, xt.grad.numpy(), rtol=1e-12)
    # cross-entropy, with everything PyTorch has (class axis last here, second in PyTorch)
    target = rng.integers(0, 5, (4, 6))
    target[0, 1] = target[2, 3] = -1
    weight = rng.uniform(0.5, 2, 5)
    for kwargs in ({}, {"weight": weight}, {"label_smoothing": 0.2}, {"weight": weight, "label_smoothing": 0.2},
                   {"ignore_index": -1}, {"ignore_index": -1, "weight": weight, "label_smoothing": 0.1}):
        tgt = target if "ignore_index" in kwargs else np.abs(target)
        got, dgot = nn.cross_entropy(x, tgt, reduction=reduction, **kwargs)
        xt = t(x, True)
        tk = {k: (t(v) if k == "weight" else v) for k, v in kwargs.items()}
        want = F.cross_entropy(xt.permute(0, 2, 1), torch.tensor(tgt), reduction=reduction, **tk)
        want.sum().backward()
        np.testing.assert_allclose(got, want.detach().numpy(), rtol=1e-10, err_msg=str(kwargs))
        if reduction != "none":
            np.testing.assert_allclose(dgot, xt.grad.numpy(), rtol=1e-10, atol=1e-14, err_msg=str(kwargs))
    # binary cross-entropy with logits
    y = rng.uniform(0, 1, x.shape)
    for kwargs in ({}, {"weight": rng.uniform(0.5, 2, x.shape)}, {"pos_weight": rng.uniform(0.5, 3, 5)}):
        got, dgot = nn.binary_cross_entropy_with_logits(x * 10, y, reduction=reduction, **kwargs)
        xt = t(x * 10, True)
        want = F.binary_cross_entropy_with_logits(xt, t(y), reduction=reduction,
                                                  **{k: t(v) for k, v in kwargs.items()})
        want.sum().backward()
        np.testing.assert_allclose(got, want.detach().numpy(), rtol=1e-10, err_msg=str(kwargs))
        if reduction != "none":
            np.testing.assert_allclose(dgot, xt.grad.numpy(), rtol=1e-10, atol=1e-15, err_msg=str(kwargs))


def test_cross_entropy_mask_drops_elements():
    rng = np.random.default_rng(6)
    x = rng.standard_normal((3, 4, 5))
    target = rng.integers(0, 5, (3, 4))
    mask = np.ones((3, 4))
    mask[:, 3] = 0
    got, dgot = nn.cross_entropy(x, target, mask=mask)
    want, dwant = nn.cross_entropy(x[:, :3], target[:, :3])
    assert got == pytest.approx(want)
    np.testing.assert_allclose(dgot[:, :3], dwant)
    assert not dgot[:, 3].any()


OPTIMIZER_CASES = [
    ("SGD", dict(lr=0.1)),
    ("SGD", dict(lr=0.1, momentum=0.9)),
    ("SGD", dict(lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01)),
    ("SGD", dict(lr=0.1, momentum=0.5, dampening=0.1)),
    ("Adam", dict(lr=0.01)),
    ("Adam", dict(lr=0.01, betas=(0.8, 0.99), weight_decay=0.1, amsgrad=True)),
    ("AdamW", dict(lr=0.01)),
    ("AdamW", dict(lr=0.01, weight_decay=0.3, amsgrad=True)),
]


@pytest.mark.parametrize("name,kwargs", OPTIMIZER_CASES)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_optimizers_match_torch(name, kwargs, dtype):
    rng = np.random.default_rng(7)
    params = {"a": rng.standard_normal((3, 4)).astype(dtype), "b": rng.standard_normal(5).astype(dtype)}
    tparams = [torch.tensor(p.copy(), requires_grad=True) for p in params.values()]
    ours = getattr(optim, name)(params, **kwargs)
    theirs = getattr(torch.optim, name)(tparams, **kwargs)
    for step in range(5):
        grads = {k: rng.standard_normal(p.shape).astype(dtype) for k, p in params.items()}
        ours.step(grads)
        for tp, g in zip(tparams, grads.values()):
            tp.grad = torch.tensor(g)
        theirs.step()
    tol = dict(rtol=1e-12, atol=1e-14) if dtype == np.float64 else dict(rtol=2e-6, atol=1e-6)
    for p, tp in zip(params.values(), tparams):
        np.testing.assert_allclose(p, tp.detach().numpy(), **tol)


def test_optimizer_state_round_trip():
    rng = np.random.default_rng(8)
    params = {"w": rng.standard_normal((4, 3))}
    a = optim.Adam(params, lr=0.05)
    grads = [{"w": rng.standard_normal((4, 3))} for _ in range(4)]
    for g in grads[:2]:
        a.step(g)
    saved_params = {"w": params["w"].copy()}
    b = optim.Adam(saved_params, lr=0.05)
    b.load_state_dict(a.state_dict())
    for g in grads[2:]:
        a.step(g)
        b.step(g)
    np.testing.assert_array_equal(params["w"], saved_params["w"])
    with pytest.raises(ValueError, match=r"unknown entry 'w/nope'"):
        b.load_state_dict({"steps": np.int64(1), "w/nope": np.zeros((4, 3))})
    with pytest.raises(ValueError, match=r"must be a float array of shape \(4, 3\)"):
        b.load_state_dict({"steps": np.int64(1), "w/exp_avg": np.zeros((2, 3))})


def test_linear_and_embedding_match_torch():
    rng = np.random.default_rng(9)
    lin = nn.Linear(6, 3, dtype=np.float64, seed=0)
    tl = torch.nn.Linear(6, 3, dtype=torch.float64)
    tl.load_state_dict({k: torch.from_numpy(v) for k, v in lin.state_dict().items()})
    x = rng.standard_normal((2, 4, 6))
    dy = rng.standard_normal((2, 4, 3))
    xt = t(x, True)
    out = tl(xt)
    out.backward(t(dy))
    np.testing.assert_allclose(lin(x), out.detach().numpy(), rtol=1e-12)
    np.testing.assert_allclose(lin.backward(dy), xt.grad.numpy(), rtol=1e-12)
    for name, p in tl.named_parameters():
        np.testing.assert_allclose(lin.grads[name], p.grad.numpy(), rtol=1e-12)
    emb = nn.Embedding(8, 3, padding_idx=2, dtype=np.float64, seed=0)
    te = torch.nn.Embedding(8, 3, padding_idx=2, dtype=torch.float64)
    te.load_state_dict({k: torch.from_numpy(v) for k, v in emb.state_dict().items()})
    ids = rng.integers(0, 8, (3, 5))
    dy = rng.standard_normal((3, 5, 3))
    te(torch.tensor(ids)).backward(t(dy))
    np.testing.assert_allclose(emb(ids), te(torch.tensor(ids)).detach().numpy())
    emb.backward(dy)
    np.testing.assert_allclose(emb.grads["weight"], te.weight.grad.numpy(), rtol=1e-12)
    assert not emb.params["weight"][2].any()


def test_sequential_state_dict_matches_torch_names():
    ours = nn.Sequential(nn.Embedding(10, 4), fastrnn.LSTM(4, 8, num_layers=2), nn.Linear(8, 10))
    theirs = torch.nn.Sequential(torch.nn.Embedding(10, 4), torch.nn.LSTM(4, 8, num_layers=2),
                                 torch.nn.Linear(8, 10))
    assert list(ours.state_dict()) == list(theirs.state_dict())
    theirs.load_state_dict({k: torch.from_numpy(v) for k, v in ours.state_dict().items()})


# --- Dropout, modes ----------------------------------------------------------------------

def test_dropout():
    drop = nn.Dropout(0.25, seed=0)
    x = np.ones((200, 50))
    y = drop(x)
    assert set(np.unique(y)) == {0.0, 1 / 0.75}
    assert 0.2 < np.mean(y == 0) < 0.3
    np.testing.assert_array_equal(drop.backward(np.ones_like(x)), y)
    drop.eval()
    np.testing.assert_array_equal(drop(x), x)
    with pytest.raises(ValueError, match="p must be in"):
        nn.Dropout(1.5)


def test_bad_inputs():
    lin = nn.Linear(3, 2)
    with pytest.raises(ValueError, match=r"in_features=3, got shape \(4, 5\)"):
        lin(np.ones((4, 5)))
    with pytest.raises(ValueError, match="no stored forward pass"):
        lin.backward(np.ones((4, 2)))
    emb = nn.Embedding(5, 2)
    with pytest.raises(ValueError, match=r"between 0 and num_embeddings - 1 = 4, got 5"):
        emb(np.array([1, 5]))
    with pytest.raises(TypeError, match="ids must be an integer array"):
        emb(np.array([1.0]))
    with pytest.raises(ValueError, match=r"target must be in \[0, 3\)"):
        nn.cross_entropy(np.zeros((2, 3)), np.array([0, 3]))
    with pytest.raises(ValueError, match="reduction must be one of"):
        nn.mse_loss(np.zeros(2), np.zeros(2), reduction="avg")
    with pytest.raises(ValueError, match="nesterov needs momentum"):
        optim.SGD({"w": np.zeros(2)}, nesterov=True)
    with pytest.raises(TypeError, match="params must be a non-empty dict"):
        optim.Adam([np.zeros(2)])


# --- saving and loading ---------------------------------------------------------------------

def _model():
    return nn.Sequential(nn.Embedding(12, 5, seed=0), fastrnn.GRU(5, 6, num_layers=2, batch_first=True, seed=1),
                         nn.Linear(6, 12, seed=2))


def test_save_load_round_trip(tmp_path):
    model = _model()
    ids = np.random.default_rng(10).integers(0, 12, (2, 7))
    opt = optim.AdamW(model.params, lr=0.01)
    logits = model(ids)
    model.backward(nn.cross_entropy(logits, ids)[1])
    opt.step(model.grads)
    path = tmp_path / "model.npz"
    fastrnn.save(path, model, optimizer=opt, extra={"vocab": "abc"})
    ck = fastrnn.load_checkpoint(path)
    model.eval()
    ck.model.eval()
    np.testing.assert_array_equal(ck.model(ids), model(ids))
    assert ck.extra == {"vocab": "abc"}
    assert isinstance(ck.optimizer, optim.AdamW) and ck.optimizer.steps == 1
    for k, v in opt.state_dict().items():
        np.testing.assert_array_equal(ck.optimizer.state_dict()[k], v)
    # a layer's own save, and loading into an existing model
    layer = fastrnn.LSTM(3, 4, num_layers=2, bidirectional=True, dtype=np.float64)
    layer.save(tmp_path / "lstm.npz")
    again = fastrnn.load(tmp_path / "lstm.npz")
    assert isinstance(again, fastrnn.LSTM) and again.bidirectional and again.dtype == np.float64
    x = np.ones((4, 2, 3))
    np.testing.assert_array_equal(again.eval()(x)[0], layer.eval()(x)[0])
    target = fastrnn.LSTM(3, 4, num_layers=2, bidirectional=True, dtype=np.float64)
    fastrnn.load(tmp_path / "lstm.npz", model=target)
    np.testing.assert_array_equal(target.eval()(x)[0], layer(x)[0])
    # the GRU variant is part of the config
    for cls in (fastrnn.GRU, fastrnn.GRUCell):
        gru = cls(3, 4, reset_after=False)
        gru.save(tmp_path / "gru.npz")
        again = fastrnn.load(tmp_path / "gru.npz")
        assert type(again) is cls and not again.reset_after


def test_user_models_need_registration(tmp_path):
    class Tagger(nn.Module):
        def __init__(self, vocab, hidden):
            super().__init__()
            self.embed = nn.Embedding(vocab, 4)
            self.rnn = fastrnn.LSTM(4, hidden)
            self._config = dict(vocab=vocab, hidden=hidden)

    model = Tagger(9, 3)
    assert list(model.params)[:2] == ["embed.weight", "rnn.weight_ih_l0"]
    path = tmp_path / "tagger.npz"
    fastrnn.save(path, model)
    with pytest.raises(ValueError, match=r"unknown module class 'Tagger'"):
        fastrnn.load(path)
    fastrnn.register(Tagger)
    loaded = fastrnn.load(path)
    for k, v in model.params.items():
        np.testing.assert_array_equal(loaded.params[k], v)


def test_damaged_files_raise_value_error(tmp_path):
    model = _model()
    path = tmp_path / "model.npz"
    fastrnn.save(path, model, optimizer=optim.Adam(model.params))
    data = path.read_bytes()
    bad = tmp_path / "bad.npz"
    # truncated at various points
    for cut in (0, 10, 100, len(data) // 2, len(data) - 30):
        bad.write_bytes(data[:cut])
        with pytest.raises(ValueError):
            fastrnn.load(bad)
    # not an archive
    bad.write_bytes(b"hello world" * 10)
    with pytest.raises(ValueError, match="not a readable .npz archive"):
        fastrnn.load(bad)
    # a tampered header: wrong shape, unknown class, an extra key, pickled content
    def rewrite(mutate):
        with zipfile.ZipFile(path) as zin, zipfile.ZipFile(bad, "w") as zout:
            for item in zin.infolist():
                content = zin.read(item.filename)
                if item.filename == "header.npy":
                    header = json.loads(str(np.lib.format.read_array(__import__("io").BytesIO(content))[()]))
                    mutate(header)
                    buf = __import__("io").BytesIO()
                    np.lib.format.write_array(buf, np.array(json.dumps(header)))
                    content = buf.getvalue()
                zout.writestr(item, content)
    rewrite(lambda h: h["params"].__setitem__("2.weight", [5, 5]))
    with pytest.raises(ValueError, match=r"parameter '2.weight' is declared \(5, 5\)"):
        fastrnn.load(bad)
    rewrite(lambda h: h["model"].__setitem__("class", "os.system"))
    with pytest.raises(ValueError, match=r"unknown module class 'os.system'"):
        fastrnn.load(bad)
    rewrite(lambda h: h["model"]["config"]["layers"][1]["config"].__setitem__("hidden_size", -3))
    with pytest.raises(ValueError, match=r"invalid config for GRU: hidden_size must be >= 1"):
        fastrnn.load(bad)
    rewrite(lambda h: h.__setitem__("format", "other"))
    with pytest.raises(ValueError, match="no fastrnn header"):
        fastrnn.load(bad)
    # an object array where a parameter should be
    arrays = dict(np.load(path))
    arrays["param/2.bias"] = np.array([object()] * 12, dtype=object)
    with open(bad, "wb") as f:
        np.savez(f, **arrays)
    with pytest.raises(ValueError, match=r"array 'param/2.bias' has dtype object"):
        fastrnn.load(bad)
