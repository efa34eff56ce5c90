"""Anti-collapse options: SIGReg and VICReg per token position (values, gradients, DDP), MAE patch targets."""

from __future__ import annotations

import math
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch
from scipy.integrate import quad
from test_pretrain import WINDOW, _cfg, _make_data, _states_equal

from brainjepa.errors import InputError
from brainjepa.train import checkpoint as ckpt
from brainjepa.train.config import load_config
from brainjepa.train.jepa import normalize_patches
from brainjepa.train.pretrain import Trainer, pretrain
from brainjepa.train.regularizers import (
    Regularizer,
    epps_pulley_grid,
    null_expectation,
    sigreg,
    sigreg_directions,
    vicreg_variance,
)

F64 = torch.float64


def _one_position(values: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """N samples of one 1-D token at position 0: z [N, 1, D], idx [N, 1], valid [N, 1]."""
    z = torch.tensor(values, dtype=F64).reshape(len(values), 1, -1)
    return z, torch.zeros(len(values), 1, dtype=torch.long), torch.ones(len(values), 1, dtype=torch.bool)


def _epps_pulley(s: np.ndarray, lo: float, hi: float) -> float:
    """N * int_lo^hi |phi_hat(t) - e^{-t^2/2}|^2 e^{-t^2/2} dt by adaptive quadrature (scipy)."""
    def integrand(t: float) -> float:
        return ((np.cos(t * s).mean() - np.exp(-t * t / 2)) ** 2 + np.sin(t * s).mean() ** 2) * np.exp(-t * t / 2)

    return len(s) * quad(integrand, lo, hi, epsabs=1e-13, epsrel=1e-12, limit=400)[0]


# ------------------------------------------------------------------------------------------- SIGReg values
@pytest.mark.parametrize("draw", ["normal", "shifted", "heavy_tailed"])
def test_sigreg_statistic_equals_scipy_quadrature(draw):
    """One slice, one position: the statistic is the Epps-Pulley integral. With many knots the trapezoid rule
    equals quad on [-tmax, tmax] (and on the real line for a wide tmax); the default 17 knots on [0, 3] are
    within 1.1% of the real-line integral on these samples (measured; 2% asked)."""
    rng = np.random.default_rng(1)
    s = {"normal": rng.normal(size=40), "shifted": rng.normal(0.5, 1.5, size=40),
         "heavy_tailed": rng.standard_t(3, size=40)}[draw]
    z, idx, valid = _one_position(s)
    unit = torch.ones(1, 1, dtype=F64)
    truncated = sigreg(z, idx, valid, 1, unit, knots=2001, tmax=3.0).item()
    assert truncated == pytest.approx(_epps_pulley(s, -3.0, 3.0), rel=1e-6)
    real_line = _epps_pulley(s, -np.inf, np.inf)
    assert sigreg(z, idx, valid, 1, unit, knots=4001, tmax=10.0).item() == pytest.approx(real_line, rel=1e-9)
    assert sigreg(z, idx, valid, 1, unit).item() == pytest.approx(real_line, rel=2e-2)


def test_epps_pulley_grid_integrates_the_gaussian_window():
    t, w = epps_pulley_grid(17, 3.0, F64)
    assert t[0] == 0 and t[-1] == 3.0 and len(t) == 17
    # int_{-3}^{3} e^{-t^2/2} dt, by the doubled trapezoid rule on [0, 3]
    assert w.sum().item() == pytest.approx(math.sqrt(2 * math.pi) * math.erf(3 / math.sqrt(2)), rel=2e-3)
    with pytest.raises(ValueError, match="knots >= 2"):
        epps_pulley_grid(1, 3.0)


def test_sigreg_is_at_its_null_level_for_gaussian_samples_and_large_for_constant_ones():
    """Gaussian samples: E[T] = int (1 - e^{-t^2}) e^{-t^2/2} dt ~ 1.05 whatever N (so T / N -> 0); 512
    independent positions average out its skewed spread (seeds 0-5 measured within 6%). A constant sample:
    every projection is 0, phi_hat = 1 and T = N * sum_k w_k (1 - e^{-t_k^2/2})^2 ~ 0.41 N."""
    torch.manual_seed(0)
    n, d, p = 256, 4, 512
    directions = sigreg_directions(d, 32, seed=0, step=0).to(F64)
    z = torch.randn(n, p, d, dtype=F64)
    idx, valid = torch.arange(p).expand(n, p), torch.ones(n, p, dtype=torch.bool)
    gaussian = sigreg(z, idx, valid, p, directions).item()
    assert gaussian == pytest.approx(null_expectation(3.0), rel=0.1) and gaussian / n < 1e-2
    constant = sigreg(torch.full_like(z, 0.0), idx, valid, p, directions).item()
    t, w = epps_pulley_grid(17, 3.0, F64)
    assert constant == pytest.approx(n * float((w * (1 - torch.exp(-t**2 / 2)) ** 2).sum()), rel=1e-9)
    assert constant > 50 * gaussian


def test_sigreg_gradient_is_autograd_exact_and_chunking_changes_nothing():
    """The hand-written backward (recomputing each chunk) against torch's numerical gradient, and one chunk
    against many (the memory bound must not change the value)."""
    torch.manual_seed(1)
    z = torch.randn(5, 6, 4, dtype=F64, requires_grad=True)
    idx = torch.stack([torch.randperm(8)[:6] for _ in range(5)])
    valid = torch.rand(5, 6) > 0.2
    directions = sigreg_directions(4, 7, seed=0, step=3).to(F64)
    assert torch.autograd.gradcheck(lambda x: sigreg(x, idx, valid, 8, directions, chunk_bytes=600), (z,))
    assert torch.autograd.gradcheck(lambda x: vicreg_variance(x, idx, valid, 8, 1.0, 1e-4), (z,))
    whole = sigreg(z, idx, valid, 8, directions)
    (g_whole,) = torch.autograd.grad(whole, z)
    chunked = sigreg(z, idx, valid, 8, directions, chunk_bytes=600)   # one slice per chunk
    (g_chunked,) = torch.autograd.grad(chunked, z)
    torch.testing.assert_close(chunked, whole, rtol=1e-12, atol=0)
    torch.testing.assert_close(g_chunked, g_whole, rtol=1e-12, atol=1e-15)


def test_directions_are_unit_and_a_function_of_seed_and_step():
    a = sigreg_directions(16, 32, seed=3, step=7)
    assert a.shape == (16, 32) and torch.allclose(a.norm(dim=0), torch.ones(32))
    assert torch.equal(a, sigreg_directions(16, 32, seed=3, step=7))
    assert not torch.equal(a, sigreg_directions(16, 32, seed=3, step=8))
    assert not torch.equal(a, sigreg_directions(16, 32, seed=4, step=7))


# ------------------------------------------------------------------------------------------- VICReg values
def test_vicreg_is_zero_for_unit_variance_and_gamma_for_constant_samples():
    torch.manual_seed(0)
    x = torch.randn(64, 3, 5, dtype=F64)
    x = (x - x.mean(0)) / x.std(0)                    # unit (unbiased) variance at every position and feature
    idx = torch.arange(3).expand(64, 3)
    valid = torch.ones(64, 3, dtype=torch.bool)
    assert vicreg_variance(x, idx, valid, 3).item() == 0.0
    constant = vicreg_variance(torch.full_like(x, 2.5), idx, valid, 3, gamma=1.0, eps=1e-4).item()
    assert constant == pytest.approx(1.0 - math.sqrt(1e-4))
    assert vicreg_variance(torch.full_like(x, 2.5), idx, valid, 3, gamma=2.0).item() == pytest.approx(1.99)


# ------------------------------------------------------------------------------------------- per position
def _small_case() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """3 samples, 4 positions, D = 1: position 0 held by sample 0 only (left out), position 1 by all three,
    position 2 by samples 1 and 2, position 3 only by padding (and by sample 2's padding slot)."""
    z = torch.tensor([[[1.0], [2.0], [1e6]],
                      [[4.0], [0.5], [-7e5]],
                      [[7.0], [-0.5], [3e5]]], dtype=F64)
    idx = torch.tensor([[0, 1, 3], [1, 2, 3], [1, 2, 3]])
    valid = torch.tensor([[True, True, False], [True, True, False], [True, True, False]])
    return z, idx, valid


def test_vicreg_per_position_matches_a_hand_computation():
    z, idx, valid = _small_case()
    # position 1: {2, 4, 7}, mean 13/3, unbiased var 19/3; position 2: {0.5, -0.5}, var 0.5
    std1, std2 = math.sqrt(19 / 3 + 1e-4), math.sqrt(0.5 + 1e-4)
    expected = (max(0.0, 3.0 - std1) + max(0.0, 3.0 - std2)) / 2
    assert vicreg_variance(z, idx, valid, 4, gamma=3.0).item() == pytest.approx(expected, rel=1e-12)


def test_sigreg_per_position_is_the_mean_of_each_positions_own_statistic():
    """Each position's samples are tested on their own (position 1: {2, 4, 7}, position 2: {0.5, -0.5}); the
    single sample at position 0 and the padding do not count."""
    z, idx, valid = _small_case()
    unit = torch.ones(1, 1, dtype=F64)
    per = [_epps_pulley(np.array(s), -3.0, 3.0) for s in ([2.0, 4.0, 7.0], [0.5, -0.5])]
    value = sigreg(z, idx, valid, 4, unit, knots=2001).item()
    assert value == pytest.approx(np.mean(per), rel=1e-6)
    alone = sigreg(*_one_position(np.array([2.0, 4.0, 7.0])), 1, unit, knots=2001).item()
    assert alone == pytest.approx(per[0], rel=1e-6)
    # nothing held twice: 0, and a gradient of 0
    z1 = z[:1].clone().requires_grad_()
    for term in (sigreg(z1, idx[:1], valid[:1], 4, unit), vicreg_variance(z1, idx[:1], valid[:1], 4)):
        assert term.item() == 0.0
        (grad,) = torch.autograd.grad(term, z1)
        assert not grad.any()


def test_regularizers_run_in_float32_under_bf16_autocast():
    torch.manual_seed(0)
    z = torch.randn(6, 4, 8)
    idx = torch.arange(4).expand(6, 4)
    valid = torch.ones(6, 4, dtype=torch.bool)
    for kind, weight in (("sigreg", 0.09), ("vicreg", 1.0)):
        term = Regularizer(kind, weight, slices=16)
        plain = term(z.bfloat16(), idx, valid, 4)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            autocast = term(z.bfloat16(), idx, valid, 4)
        assert autocast.dtype == torch.float32 and torch.equal(autocast, plain)


# ------------------------------------------------------------------------------------------- DDP
DDP_SCRIPT = """
import sys, torch, torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from brainjepa.train.regularizers import sigreg, vicreg_variance
dist.init_process_group("gloo")
rank = dist.get_rank()
data = torch.load(sys.argv[1], weights_only=True)
part = slice(*data["parts"][rank])
layer = torch.nn.Linear(data["weight"].shape[1], data["weight"].shape[0], bias=False).double()
layer.weight.data.copy_(data["weight"])
model = DistributedDataParallel(layer)
out = {}
for kind in ("sigreg", "vicreg"):
    x = data["x"][part].clone().requires_grad_()
    z = model(x)
    if kind == "sigreg":
        value = sigreg(z, data["idx"][part], data["valid"][part], data["P"], data["directions"], chunk_bytes=2000)
    else:
        value = vicreg_variance(z, data["idx"][part], data["valid"][part], data["P"], 1.5, 1e-4)
    value.backward()
    out[kind] = {"value": value.detach(), "x_grad": x.grad, "w_grad": layer.weight.grad.clone()}
    layer.weight.grad = None
torch.save(out, f"{sys.argv[2]}/rank{rank}.pt")
dist.destroy_process_group()
"""


def _torchrun(script, *args, timeout: int = 300) -> None:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(script),
           *map(str, args)]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-3000:]


def test_ddp_value_and_gradients_equal_one_process_with_the_global_batch(tmp_path):
    """Two Gloo processes (torchrun) with 3 and 2 samples of a global batch of 5 (per-sample positions, padding,
    a position only rank 1 holds, one held once), z = x W^T with W in DDP: each rank's value is the
    single-process value on the global batch; each rank's input gradient is world_size x the single-process
    one (every rank adds the same R), so DDP's mean of W's gradient is the single-process gradient."""
    torch.manual_seed(0)
    b, k, d_in, d, p = 5, 6, 5, 4, 10
    idx = torch.stack([torch.randperm(8)[:k] for _ in range(b)])
    idx[3:, 0] = 8                                     # position 8: only rank 1's samples
    idx[0, 1] = 9                                      # position 9: one sample
    valid = torch.rand(b, k) > 0.15
    data = {"x": torch.randn(b, k, d_in, dtype=F64), "idx": idx, "valid": valid, "P": p,
            "weight": torch.randn(d, d_in, dtype=F64), "parts": [(0, 3), (3, 5)],
            "directions": sigreg_directions(d, 12, seed=0, step=5).to(F64)}
    torch.save(data, tmp_path / "data.pt")
    script = tmp_path / "ddp_regularizers.py"
    script.write_text(DDP_SCRIPT)
    _torchrun(script, tmp_path / "data.pt", tmp_path)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    for kind in ("sigreg", "vicreg"):
        weight = data["weight"].clone().requires_grad_()
        x = data["x"].clone().requires_grad_()
        z = x @ weight.T
        if kind == "sigreg":
            value = sigreg(z, idx, valid, p, data["directions"])
        else:
            value = vicreg_variance(z, idx, valid, p, 1.5, 1e-4)
        value.backward()
        assert value.item() > 0
        for rank, (lo, hi) in enumerate(data["parts"]):
            got = ranks[rank][kind]
            torch.testing.assert_close(got["value"], value.detach(), rtol=1e-12, atol=0)
            torch.testing.assert_close(got["x_grad"], 2 * x.grad[lo:hi], rtol=1e-10, atol=1e-14)
            torch.testing.assert_close(got["w_grad"], weight.grad, rtol=1e-10, atol=1e-14)


# ------------------------------------------------------------------------------------------- config
def test_regularizer_settings_are_checked_at_load():
    assert load_config(None, []).optim.regularizer == "none"
    cfg = load_config(None, ["optim.regularizer=sigreg", "optim.regularizer_weight=0.09"]).optim
    assert (cfg.sigreg_slices, cfg.sigreg_knots, cfg.sigreg_tmax) == (1024, 17, 3.0)
    assert (cfg.vicreg_gamma, cfg.vicreg_eps) == (1.0, 1e-4)
    with pytest.raises(InputError, match=r"optim.regularizer is 'barlow'; allowed: none, sigreg, vicreg"):
        load_config(None, ["optim.regularizer=barlow"])
    with pytest.raises(InputError, match=r"'optim.regularizer_weight' must be > 0 with optim.regularizer 'vicreg'"):
        load_config(None, ["optim.regularizer=vicreg"])
    with pytest.raises(InputError, match=r"'optim.regularizer_weight' is 0.5 but optim.regularizer is 'none'"):
        load_config(None, ["optim.regularizer_weight=0.5"])
    with pytest.raises(InputError, match=r"'optim.regularizer_weight' must be a finite number >= 0"):
        load_config(None, ["optim.regularizer=sigreg", "optim.regularizer_weight=-1"])
    with pytest.raises(InputError, match=r"'optim.sigreg_knots' must be at least 2"):
        load_config(None, ["optim.sigreg_knots=1"])
    with pytest.raises(InputError, match=r"'optim.sigreg_slices' must be at least 1"):
        load_config(None, ["optim.sigreg_slices=0"])
    with pytest.raises(InputError, match=r"'optim.vicreg_eps' must be a finite number > 0"):
        load_config(None, ["optim.vicreg_eps=0"])
    with pytest.raises(InputError, match=r"optim.mae_targets is 'pixel'; allowed: raw, patch_norm"):
        load_config(None, ["optim.mae_targets=pixel"])


def test_patch_norm_targets_are_each_patch_standardised():
    torch.manual_seed(0)
    targets = torch.randn(2, 5, 16) * 4 + 10
    normed = normalize_patches(targets, "patch_norm")
    assert torch.allclose(normed.mean(-1), torch.zeros(2, 5), atol=1e-5)
    assert torch.allclose(normed.var(-1), torch.ones(2, 5), atol=1e-4)
    assert normalize_patches(targets, "raw") is targets
    with pytest.raises(InputError, match="optim.mae_targets"):
        normalize_patches(targets, "pixel")


# ------------------------------------------------------------------------------------------- pretraining
@pytest.fixture(scope="module")
def reg_data(tmp_path_factory):
    """Shards of 24 runs (12 ROIs x 48 steps), gradients and statistics (as test_pretrain's tiny_data)."""
    return _make_data(tmp_path_factory.mktemp("reg"), 12, 48, 24, WINDOW)


@pytest.mark.parametrize("extra", [["optim.regularizer=sigreg", "optim.regularizer_weight=0.09",
                                    "optim.sigreg_slices=64"],
                                   ["optim.regularizer=vicreg", "optim.regularizer_weight=1.0"]],
                         ids=["sigreg", "vicreg"])
def test_pretraining_with_a_regularizer_logs_it_and_is_deterministic(reg_data, tmp_path, monkeypatch, extra):
    """Two runs of one config: equal weights and logs; the regulariser's monitor is finite, positive and in the
    log (the CSV given a ``regularizer`` column here; see test_log_columns_include_the_regularizer)."""
    from brainjepa.train import log as train_log

    monkeypatch.setattr(train_log.CSVLog.__init__, "__defaults__", ([*train_log.LOG_COLUMNS, "regularizer"],))
    runs = [ckpt.load_checkpoint(pretrain(_cfg(reg_data, tmp_path / f"r{i}", *extra))) for i in range(2)]
    _states_equal(*runs)
    logs = [pd.read_csv(tmp_path / f"r{i}" / "log.csv") for i in range(2)]
    pd.testing.assert_frame_equal(logs[0].drop(columns=["samples_per_s", "elapsed_s"]),
                                  logs[1].drop(columns=["samples_per_s", "elapsed_s"]))
    assert np.isfinite(logs[0]["loss"]).all()
    assert np.isfinite(logs[0]["regularizer"]).all() and (logs[0]["regularizer"] > 0).all()


def test_micro_step_adds_the_weighted_regularizer(reg_data, tmp_path):
    """The loss of one micro-step is the data loss + weight x R, with R in the monitors (the same batch and
    weights, with and without the regulariser)."""
    losses = {}
    for name, extra in (("off", []), ("on", ["optim.regularizer=vicreg", "optim.regularizer_weight=2.0"])):
        torch.manual_seed(0)
        trainer = Trainer(_cfg(reg_data, tmp_path / name, "model.drop_path=0.0", *extra))
        batch = next(iter(trainer.loader))
        losses[name] = trainer.micro_step(batch, True)
    (off, monitors_off), (on, monitors_on) = losses["off"], losses["on"]
    assert "regularizer" not in monitors_off
    assert 0 < monitors_on["regularizer"].item() < 1
    assert on.item() == pytest.approx(off.item() + 2.0 * monitors_on["regularizer"].item(), rel=1e-6)


def test_log_columns_include_the_regularizer():
    from brainjepa.train.log import LOG_COLUMNS

    assert "regularizer" in LOG_COLUMNS


def test_patch_norm_targets_train_the_mae_and_are_refused_for_jepa(reg_data, tmp_path):
    pretrain(_cfg(reg_data, tmp_path / "mae", "objective=mae", "mask.mode=random", "optim.mae_targets=patch_norm",
                  "optim.epochs=1"))
    log = pd.read_csv(tmp_path / "mae" / "log.csv")
    assert np.isfinite(log["loss"]).all()
    with pytest.raises(InputError, match=r"'optim.mae_targets' is 'patch_norm': only the mae objective"):
        pretrain(_cfg(reg_data, tmp_path / "jepa", "optim.mae_targets=patch_norm", "optim.epochs=1"))


DDP_TRAIN = """
import sys
from brainjepa.train.config import load_config
from brainjepa.train.pretrain import pretrain
pretrain(load_config(None, sys.argv[1:]))
"""


def test_ddp_pretraining_with_sigreg_equals_one_process_with_the_global_batch(tmp_path):
    """torchrun, 2 Gloo processes at batch 2 = one process at batch 4, SIGReg on: every step's loss (which holds
    weight x R of the global batch, with the step's directions) and the final weights agree."""
    data = _make_data(tmp_path / "data", 12, 48, 16, WINDOW)
    script = tmp_path / "ddp_train.py"
    script.write_text(DDP_TRAIN)
    sets = [f"data.manifest={data / 'shards' / 'manifest.json'}", f"data.gradients={data / 'gradients.tsv'}",
            f"data.window={WINDOW}", "data.num_workers=0", "optim.epochs=1", "optim.warmup_epochs=1",
            "model.size=tiny", "run.progress=false", "run.log_every=1", "optim.regularizer=sigreg",
            "optim.regularizer_weight=0.5", "optim.sigreg_slices=64"]
    _torchrun(script, *sets, f"run.out_dir={tmp_path / 'ddp'}", "data.batch_size=2")
    single = ckpt.load_checkpoint(pretrain(load_config(None, [*sets, f"run.out_dir={tmp_path / 'one'}",
                                                               "data.batch_size=4"])))
    ddp = ckpt.load_checkpoint(tmp_path / "ddp" / "final.pt")
    assert ddp["step"] == single["step"] == 4
    losses = [pd.read_csv(tmp_path / name / "log.csv")["loss"].to_numpy() for name in ("ddp", "one")]
    np.testing.assert_allclose(*losses, rtol=1e-5)
    for module in ckpt.MODULES:   # Adam's update where a gradient is ~0: see test_pretrain's DDP test
        for key, value in single[module].items():
            torch.testing.assert_close(ddp[module][key], value, rtol=0, atol=1e-3, msg=f"{module}.{key}")
