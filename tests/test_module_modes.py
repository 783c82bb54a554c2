"""Per-submodule train/eval modes survive evaluations (issue 24, item 6).

A user fine-tunes with a BatchNorm frozen in eval mode (``model.train(); model.bn.eval()``).
Evaluations put the module in eval mode; the next gradient must bring back exactly the user's
modes, not a blanket ``train()`` that would switch the BatchNorm to batch statistics and update
its running statistics. Each engine's run (float64, evaluations between the steps) equals, bit
for bit, the run of a reference whose BatchNorm cannot leave eval mode, and the running
statistics end exactly where they started.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from _distributed import start_workers, wait_all
from _modes_worker import make_model, make_task, run
from peergrad.train.params import WorkerModel


def _initial_buffers() -> dict[str, Tensor]:
    return {n: b.to(torch.float64) for n, b in make_model(reference=False).named_buffers()}


def _check(user: tuple, reference: tuple) -> None:
    (x, buffers, records), (x_ref, buffers_ref, records_ref) = user, reference
    assert x.dtype == torch.float64
    assert torch.equal(x, x_ref)
    assert records == records_ref and len(records) == 4  # steps 0, 2, 4, 6
    for name, start in _initial_buffers().items():  # running stats and counter unchanged
        assert torch.equal(buffers[name], start.expand_as(buffers[name])), name
        assert torch.equal(buffers_ref[name], buffers[name]), name


def test_worker_model_restores_the_recorded_modes_after_evaluate() -> None:
    net = make_model(reference=False)
    model = WorkerModel(net)
    assert model.train_modes == {"": True, "fc1": True, "bn": False, "drop": True, "fc2": True}
    x = model.x0().to(torch.float64).expand(2, -1).clone()
    net.to(torch.float64)
    buffers = model.init_buffers(2)
    xb, yb = torch.randn(2, 8, 12, dtype=torch.float64), torch.randint(0, 5, (2, 8))
    model.evaluate(x[:1], {n: b[:1] for n, b in buffers.items()}, xb[0], yb[0])
    assert not any(m.training for m in net.modules())
    model.grad(x, buffers, xb, yb)
    assert {n: m.training for n, m in net.named_modules()} == model.train_modes
    fn = model.bound_grad_fn(x[:1].clone(), {n: b[:1].clone() for n, b in buffers.items()})
    assert fn is not None and not net.bn.training


def test_simulated_engine_keeps_a_frozen_batchnorm_frozen_after_evaluations() -> None:
    _check(run("simulated", 4, False), run("simulated", 4, True))
    assert not make_task(False).model.bn.training  # the user's module is never changed


def test_distributed_engine_keeps_a_frozen_batchnorm_frozen(tmp_path: Path) -> None:
    """2 gloo processes; each rank's trajectory and buffers equal the reference's."""
    here = Path(__file__).parent
    prefix = tmp_path / "modes.pt"
    procs = start_workers(
        [str(here / "_modes_worker.py"), str(prefix)], 2, cwd=tmp_path, log_dir=tmp_path
    )
    codes = wait_all(procs, timeout_s=300)
    logs = "\n".join((tmp_path / f"rank{r}.err").read_text()[-2000:] for r in range(2))
    assert codes == [0, 0], f"worker exit codes {codes}\n{logs}"
    for rank in range(2):
        saved = torch.load(f"{prefix}.{rank}")
        _check(saved["user"], saved["reference"])
