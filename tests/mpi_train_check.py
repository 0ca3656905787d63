"""Run by tests/test_scaling.py as `mpirun -n 2 python mpi_train_check.py`:
data-parallel training of an LSTM regressor for a few steps on two ranks,
then (on rank 0) checks that the ranks' parameters are identical and equal,
to float32 rounding, to training on the whole batch in one process.  Prints
MPI-CHECK OK and exits 0, or exits 1."""
import sys

import numpy as np

import fastrnn
from fastrnn import mpi, nn, optim

STEPS, BATCH, T = 8, 24, 12


def make_model(seed):
    return nn.Sequential(fastrnn.LSTM(3, 16, batch_first=True, seed=seed), nn.Linear(16, 1, seed=seed + 1))


def train(model, x, y, comm):
    opt = optim.Adam(model.params, lr=1e-2)
    for _ in range(STEPS):
        rows = mpi.shard(len(x), comm)
        pred = model(x[rows])
        loss, dpred = nn.mse_loss(pred, y[rows])
        model.backward(dpred)
        mpi.allreduce_gradients(model, comm, weight=dpred.size)
        fastrnn.clip_grad_norm(model.grads, max_norm=0.5)
        opt.step(model.grads)
        model.zero_grad()
    return model


def main():
    comm = mpi.world()
    assert comm is not None and comm.Get_size() == 2, "run under mpirun -n 2"
    rank = comm.Get_rank()
    fastrnn.set_num_threads(mpi.local_threads(comm))
    rng = np.random.default_rng(0)
    x = rng.standard_normal((BATCH, T, 3)).astype(np.float32)
    y = np.cumsum(x[:, :, :1], axis=1) * 0.3
    model = make_model(seed=rank)          # replicas start different: the broadcast must fix that
    mpi.broadcast_parameters(model, comm)
    train(model, x, y, comm)
    states = comm.gather(model.state_dict(), root=0)
    if rank != 0:
        return 0
    same = all(np.array_equal(states[0][k], states[1][k]) for k in states[0])
    alone = train(make_model(seed=0), x, y, None).state_dict()
    worst = max(float(np.max(np.abs(states[0][k] - alone[k]))) for k in alone)
    moved = max(float(np.max(np.abs(states[0][k] - make_model(seed=0).state_dict()[k]))) for k in alone)
    print(f"ranks identical: {same}; max |2 ranks - 1 process| = {worst:.2e} (parameters moved by up to {moved:.2e})")
    if same and worst < 1e-5 and moved > 1e-3:
        print("MPI-CHECK OK")
        return 0
    return 1


if __name__ == "__main__":
    sys.exit(main())
