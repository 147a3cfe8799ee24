"""torchrun DDP: two CPU processes (gloo) compute what one process computes.

With per-process batch B/2 on 2 ranks and batch B on 1 process, every optimiser step averages
the gradient of the same B examples (rank-strided batches of one shared epoch). When B divides
the epoch the two runs are the same computation up to float rounding; otherwise they differ by
how the final partial batch of each epoch is weighted, and reach the same quality.

DDP always trains with dense Adam (it reduces dense gradients); these tables are far below
:class:`~polyrec.train.row_sparse_adam.RowSparseAdam`'s size threshold, so one process does too.

One torchrun launch (process start-up dominates the cost) runs both checks' 2-process halves.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist

from polyrec.data.synthetic import make_synthetic
from polyrec.models.base import Recommender
from polyrec.models.classic.bpr import BPRMF
from polyrec.train.distributed import main

pytestmark = [
    pytest.mark.ddp,
    pytest.mark.skipif(not dist.is_gloo_available(), reason="needs the gloo backend"),
]

EXACT = {"epochs": 2, "lr": 0.01, "factors": 16, "early_stopping": None, "progress": False}
CLI = [
    "--model", "bpr",
    "--users", "300", "--items", "150", "--interactions", "5000",
    "--valid", "0",
    "--set", "epochs=15", "--set", "lr=0.01", "--set", "factors=16",
    "--set", "early_stopping=null", "--set", "progress=false",
]  # fmt: skip

DRIVER = """
import json, sys
import numpy as np
from polyrec.data.synthetic import make_synthetic
from polyrec.models.classic.bpr import BPRMF
from polyrec.train.distributed import is_main_process, main

out, exact, cli = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3])
data = make_synthetic(300, 150, 5000, seed=0).with_interactions(np.arange(4096))
model = BPRMF(batch_size=256, **exact).fit(data)
if is_main_process():
    model.save(out + "/exact")
main([*cli, "--set", "batch_size=256", "--out", out + "/cli"])
"""


@pytest.fixture(scope="module")
def ddp_out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ddp")
    (out / "driver.py").write_text(DRIVER)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    cmd += [str(out / "driver.py"), str(out), json.dumps(EXACT), json.dumps(CLI)]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    assert run.returncode == 0, run.stderr[-3000:]
    return out


def test_two_processes_compute_what_one_computes(ddp_out: Path) -> None:
    data = make_synthetic(300, 150, 5000, seed=0).with_interactions(np.arange(4096))
    one = BPRMF(batch_size=512, **EXACT).fit(data)  # 4096 = 8 steps of 512 = 8 x (2 x 256)
    ddp = Recommender.load(ddp_out / "exact")
    users = np.arange(data.n_users)
    torch.testing.assert_close(ddp.score(users), one.score(users), rtol=1e-4, atol=1e-5)


def test_two_processes_reach_the_quality_of_one(ddp_out: Path, tmp_path: Path) -> None:
    main([*CLI, "--set", "batch_size=512", "--out", str(tmp_path)])
    ddp = json.loads((ddp_out / "cli" / "metrics.json").read_text())
    one = json.loads((tmp_path / "metrics.json").read_text())
    assert (ddp["world_size"], one["world_size"]) == (2, 1)
    assert ddp["fingerprint"] == one["fingerprint"]
    ddp_loss = [h["loss"] for h in ddp["history"]]
    one_loss = [h["loss"] for h in one["history"]]
    assert len(ddp_loss) == len(one_loss) == 15
    assert ddp_loss[-1] < 0.6 * ddp_loss[0]  # it learned
    assert ddp_loss == pytest.approx(one_loss, abs=0.05)
    for key in ("recall@20", "ndcg@20"):
        assert ddp["metrics"]["test"][key] == pytest.approx(one["metrics"]["test"][key], abs=0.02)
    assert (ddp_out / "cli" / "model" / "state.pt").is_file()
