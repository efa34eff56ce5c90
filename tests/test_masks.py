"""brainjepa.masks: regions and disjointness, sizes, padding, determinism, statistics of both modes."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from brainjepa.errors import InputError
from brainjepa.train.masks import MaskCollator, MaskConfig, paper_blocks

GRIDS = [(450, 10), (64, 10), (12, 2)]
KEYS = ("context_idx", "context_valid", "target_idx", "target_valid", "target_region")
LENGTHS = ("context_lengths", "target_lengths")


def _equal(m: dict, ref: dict) -> bool:
    """Same masks (torch.equal is False for different shapes), and the same host lengths."""
    return all(torch.equal(m[k], ref[k]) for k in KEYS) and all(m[k] == ref[k] for k in LENGTHS)


def token_grid(idx: torch.Tensor, valid: torch.Tensor, n_tokens: int) -> np.ndarray:
    """Index lists [B, L] with valid flags -> how often each token is listed per sample, [B, n_tokens]."""
    b = idx.shape[0]
    grid = np.zeros((b, n_tokens), np.int64)
    rows = np.repeat(np.arange(b), idx.shape[1]).reshape(idx.shape)
    np.add.at(grid, (rows[valid.numpy()], idx.numpy()[valid.numpy()]), 1)
    return grid


def region_sets(m: dict[str, torch.Tensor], r: int, w: int):
    """Context and per-region token grids [B, R, W] bool, and the context's ROIs [B, R] and times [B, W]."""
    ctx = token_grid(m["context_idx"], m["context_valid"], r * w).reshape(-1, r, w) > 0
    regions = [token_grid(m["target_idx"], m["target_region"] == k, r * w).reshape(-1, r, w) > 0
               for k in range(3)]
    return ctx, regions, ctx.any(2), ctx.any(1)


def check_padding(m: dict[str, torch.Tensor], truncated: bool) -> None:
    """Valid entries form a prefix; padding is index 0 and region -1; dtypes and shapes agree."""
    b = m["context_idx"].shape[0]
    for idx, valid in (("context_idx", "context_valid"), ("target_idx", "target_valid")):
        assert m[idx].dtype == torch.long and m[valid].dtype == torch.bool
        i, v = m[idx].numpy(), m[valid].numpy()  # (numpy: torch's boolean indexing is slow on CPU)
        assert i.shape == v.shape and i.shape[0] == b
        counts = v.sum(1)
        assert np.array_equal(v, np.arange(v.shape[1])[None, :] < counts[:, None])  # a prefix
        assert np.all(i[~v] == 0)
        if truncated:
            assert v.all()
        elif v.shape[1]:
            assert counts.max() == v.shape[1]  # padded to the batch maximum, never truncated
    for lengths, valid in zip(LENGTHS, ("context_valid", "target_valid")):  # host ints, the valid prefixes
        assert isinstance(m[lengths], tuple) and all(type(k) is int for k in m[lengths])
        assert m[lengths] == tuple(m[valid].sum(1).tolist())
    assert m["target_region"].dtype == torch.long
    region, tv = m["target_region"].numpy(), m["target_valid"].numpy()
    assert region.shape == tv.shape
    assert np.all(region[~tv] == -1) and np.all((region[tv] >= 0) & (region[tv] <= 2))


# -- config ----------------------------------------------------------------------------------------------------
def test_config_from_dict_and_validation():
    cfg = MaskConfig.from_dict({"mode": "reference", "alpha_roi": [0.4, 0.5]})
    assert cfg.mode == "reference" and cfg.alpha_roi == (0.4, 0.5)
    with pytest.raises(InputError, match="unknown key.*alpha_rois"):
        MaskConfig.from_dict({"alpha_rois": [0.4, 0.5]})
    with pytest.raises(InputError, match="mode"):
        MaskConfig(mode="ijepa")
    with pytest.raises(InputError, match="beta_gamma_time"):
        MaskConfig(beta_gamma_time=(0.5, 0.2))
    with pytest.raises(InputError, match="alpha_time"):
        MaskConfig(alpha_time=(0.2,))
    with pytest.raises(InputError, match="observation"):
        MaskConfig(observation_time=(0.0, 1.0))


# -- paper mode: regions, sizes, padding -------------------------------------------------------------------
@pytest.mark.parametrize("grid", GRIDS)
def test_paper_regions_are_disjoint_and_relative_to_the_context(grid):
    r, w = grid
    collator = MaskCollator(r, w, MaskConfig(), seed=3)
    for step in range(20):
        m = collator.masks_for(16, 0, step)
        check_padding(m, truncated=False)
        ctx, regions, ctx_roi, ctx_time = region_sets(m, r, w)
        n_ctx = m["context_valid"].sum(1).numpy()
        assert np.all(n_ctx > 0) and np.array_equal(ctx.sum((1, 2)), n_ctx)  # no duplicates
        assert np.all(np.diff(m["context_idx"].numpy(), axis=1)[m["context_valid"][:, 1:].numpy()] > 0)
        hits = sum(g.astype(np.int64) for g in regions) + ctx
        assert hits.max() <= 1 and np.array_equal(hits.sum((1, 2)) - n_ctx, m["target_valid"].sum(1).numpy())
        # the context is a block (its ROIs x its times) and every target lies in its region
        assert np.array_equal(ctx, ctx_roi[:, :, None] & ctx_time[:, None, :])
        alpha_region = ~ctx_roi[:, :, None] & ctx_time[:, None, :]
        beta_region = ctx_roi[:, :, None] & ~ctx_time[:, None, :]
        gamma_region = ~ctx_roi[:, :, None] & ~ctx_time[:, None, :]
        for grid_k, region in zip(regions, (alpha_region, beta_region, gamma_region)):
            assert not np.any(grid_k & ~region)


def _span(bounds, n):
    return math.floor(bounds[0] * n), math.ceil(bounds[1] * n)


def _contiguous(mask: np.ndarray) -> bool:
    t = np.flatnonzero(mask)
    return t.size == 0 or t[-1] - t[0] + 1 == t.size


@pytest.mark.parametrize("grid", [(450, 10), (64, 10)])
def test_paper_block_sizes_and_shapes(grid):
    r, w = grid
    cfg = MaskConfig()
    k = paper_blocks(np.random.default_rng(0), 2000, r, w, cfg)
    for block, bounds, n in ((k.obs_roi, cfg.observation_roi, r), (k.obs_time, cfg.observation_time, w),
                             (k.alpha_roi, cfg.alpha_roi, r), (k.alpha_time, cfg.alpha_time, w),
                             (k.beta_roi, cfg.beta_gamma_roi, r), (k.beta_time, cfg.beta_gamma_time, w),
                             (k.gamma_roi, cfg.beta_gamma_roi, r), (k.gamma_time, cfg.beta_gamma_time, w)):
        assert block.sum(1).max() <= _span(bounds, n)[1]  # lower ends: beta/gamma may be clipped
    for name, bounds, n in (("obs_roi", cfg.observation_roi, r), ("obs_time", cfg.observation_time, w),
                            ("alpha_roi", cfg.alpha_roi, r), ("alpha_time", cfg.alpha_time, w)):
        assert getattr(k, name).sum(1).min() >= _span(bounds, n)[0]  # never clipped by their region
    for b in range(2000):
        assert _contiguous(k.obs_time[b]) and _contiguous(k.alpha_time[b]) and _contiguous(k.beta_time[b])
    assert np.all(k.alpha_time <= k.obs_time) and not np.any(k.alpha_time & k.beta_time)
    assert np.array_equal(k.ctx_roi, k.obs_roi & ~k.alpha_roi)
    assert np.array_equal(k.ctx_time, k.obs_time & ~k.beta_time)
    assert np.all(k.beta_roi <= k.ctx_roi) and np.all(k.gamma_roi <= ~k.ctx_roi)
    assert np.all(k.gamma_time <= ~k.ctx_time)
    # the sizes' mean is the table's fraction (stochastic rounding), where no region clips them
    assert abs(k.obs_time.sum(1).mean() / w - np.mean(cfg.observation_time)) < 0.01
    assert abs(k.alpha_roi.sum(1).mean() / r - np.mean(cfg.alpha_roi)) < 0.01


def test_paper_masks_have_no_starved_region_and_no_roi_bias():
    r, w, n_batches = 450, 10, 300
    collator = MaskCollator(r, w, MaskConfig(), seed=0)
    per_token, empty, n = np.zeros(r * w), np.zeros(3), 0
    for step in range(n_batches):
        m = collator.masks_for(16, 0, step)
        np.add.at(per_token, m["context_idx"].numpy()[m["context_valid"].numpy()], 1)
        region = m["target_region"].numpy()
        empty += [np.sum(~np.any(region == k, axis=1)) for k in range(3)]
        n += region.shape[0]
    empty /= n
    assert empty[0] < 0.01 and empty[1] < 0.25 and empty[2] < 0.25, empty  # measured 0, 0.13, 0.16
    per_roi = per_token.reshape(r, w).sum(1) / n
    assert abs(per_roi[:200].mean() / per_roi[400:].mean() - 1) < 0.1
    per_time = per_token.reshape(r, w).sum(0) / n
    assert per_time.min() > 0.4 * per_time.max()  # contiguous blocks: edge patches less often, not rarely
    assert 0.25 < per_token.sum() / n / (r * w) < 0.40  # context fraction (measured 0.325)


# -- reference mode --------------------------------------------------------------------------------------------
def test_reference_mode_signatures():
    r, w, n_batches = 450, 10, 300
    collator = MaskCollator(r, w, MaskConfig(mode="reference"), seed=0)
    per_token, no_beta_gamma, alpha_share = np.zeros(r * w), 0, []
    for step in range(n_batches):
        m = collator.masks_for(16, 0, step)
        check_padding(m, truncated=True)  # every sample cut to the batch minimum, all valid
        np.add.at(per_token, m["context_idx"].numpy().ravel(), 1)
        region = m["target_region"].numpy()
        no_beta_gamma += int(np.all(region == 0))
        alpha_share.append(np.mean(region == 0))
        ctx = token_grid(m["context_idx"], m["context_valid"], r * w)
        tgt = token_grid(m["target_idx"], m["target_valid"], r * w)
        assert not np.any((ctx > 0) & (tgt > 0))
        assert np.all(np.isin(m["target_idx"].numpy()[region > 0] % w, [0, 1, 2, 7, 8, 9]))  # edges only
        n_alpha = (region == 0).sum(1)
        assert np.all(n_alpha == n_alpha[0])  # alpha's size is drawn once per batch
    per_roi = per_token.reshape(r, w).sum(1) / (16 * n_batches)
    assert per_roi[:200].mean() > 3 * per_roi[400:].mean()  # truncation's low-ROI-index bias (11.6x)
    assert per_token.reshape(r, w)[:, 9].sum() == 0  # the last time patch is never observed
    assert 0.5 < no_beta_gamma / n_batches < 0.8  # documented: 64.5% of batches
    assert np.mean(alpha_share) > 0.9  # documented: ~96% of targets are cross-ROI
    assert 0.15 < per_token.sum() / (16 * n_batches) / (r * w) < 0.22  # documented: ~822 tokens (18%)


def test_reference_mode_grids():
    m = MaskCollator(64, 10, MaskConfig(mode="reference"), seed=1).masks_for(8, 0, 0)
    check_padding(m, truncated=True)
    assert m["context_idx"].shape[1] > 0 and m["target_idx"].shape[1] > 0
    with pytest.raises(ValueError, match="alpha"):
        MaskCollator(12, 2, MaskConfig(mode="reference"))


# -- determinism, counting and the collate -------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["paper", "reference"])
def test_masks_are_a_function_of_seed_rank_epoch_and_step(mode):
    a, b = (MaskCollator(64, 10, MaskConfig(mode=mode), seed=5) for _ in range(2))
    same = a.masks_for(16, 2, 7)
    assert _equal(same, b.masks_for(16, 2, 7))
    for other in (a.masks_for(16, 2, 8), a.masks_for(16, 3, 7),
                  MaskCollator(64, 10, MaskConfig(mode=mode), seed=6).masks_for(16, 2, 7),
                  MaskCollator(64, 10, MaskConfig(mode=mode), seed=5, rank=1).masks_for(16, 2, 7)):
        assert not _equal(same, other)


def _items(n: int, r: int = 12, t: int = 32):
    g = torch.Generator().manual_seed(0)
    return [(torch.randn(1, r, t, generator=g), torch.tensor([float(i)])) for i in range(n)]


def test_call_counts_batches_from_set_epoch_and_resumes():
    collator = MaskCollator(12, 4, MaskConfig(), seed=1)
    batch = _items(4)
    collator.set_epoch(3)
    outs = [collator(batch) for _ in range(3)]
    assert outs[0]["x"].shape == (4, 1, 12, 32) and torch.equal(outs[0]["y"][:, 0], torch.arange(4.0))
    for step, out in enumerate(outs):
        assert _equal(out, collator.masks_for(4, 3, step))
    collator.set_epoch(3, step=2)  # resume mid-epoch
    assert _equal(collator(batch), outs[2])
    with_ids = collator([(x, y, f"run-{i}") for i, (x, y) in enumerate(batch)])
    assert with_ids["run_id"] == [f"run-{i}" for i in range(4)]
    with pytest.raises(ValueError, match="expected"):
        collator([(torch.randn(1, 11, 32), torch.zeros(1))])


class _Tiny(torch.utils.data.Dataset):
    def __init__(self, n: int):
        self.items = _items(n)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int):
        return self.items[i]


@pytest.mark.parametrize("persistent", [False, True])
def test_dataloader_workers_give_the_masks_of_each_batch_index(persistent):
    collator = MaskCollator(12, 4, MaskConfig(), seed=2)
    loader = torch.utils.data.DataLoader(_Tiny(24), batch_size=4, num_workers=2, collate_fn=collator,
                                         persistent_workers=persistent)
    for epoch in (0, 1):
        collator.set_epoch(epoch)
        batches = list(loader)
        assert len(batches) == 6
        for step, batch in enumerate(batches):  # the same masks as without workers
            assert torch.equal(batch["y"][:, 0], torch.arange(4.0 * step, 4.0 * step + 4))
            assert _equal(batch, collator.masks_for(4, epoch, step))
        seeds_differ = {tuple(b["context_idx"].ravel().tolist()) for b in batches}
        assert len(seeds_differ) == 6


# -- what the models are told about padding ------------------------------------------------------------------
def test_lengths_tell_the_models_on_the_host_whether_a_batch_is_padded():
    """Random (MAE) and reference batches are full: lengths equal the rows, so the models attend without a mask;
    paper batches are padded, and with the lengths the models compute only the valid tokens (packed): over 50
    batches of 16 at 450 x 10, the context encoder and the predictor compute about 29 % fewer tokens than when
    padded to the batch maximum (bench/masks.py --padding: 4,222 against 5,914 per sample over 200 batches)."""
    for mode in ("random", "reference"):
        m = MaskCollator(450, 10, MaskConfig(mode=mode), seed=0).masks_for(16, 0, 0)
        if mode == "reference":
            check_padding(m, truncated=True)
        assert all(type(k) is int for k in m["context_lengths"] + m["target_lengths"])
        assert set(m["context_lengths"]) == {m["context_idx"].shape[1]}
        assert set(m["target_lengths"]) == {m["target_idx"].shape[1]}
    collator = MaskCollator(450, 10, MaskConfig(), seed=0)
    padded = packed = 0
    for step in range(50):
        m = collator.masks_for(16, 0, step)
        check_padding(m, truncated=False)
        nc, nt = m["context_idx"].shape[1], m["target_idx"].shape[1]
        c, t = np.array(m["context_lengths"]), np.array(m["target_lengths"])
        padded += 16 * nc + 16 * (nc + nt)  # encoder + predictor, padded to the batch maximum
        packed += c.sum() + (c + t).sum()
    assert 0.65 < packed / padded < 0.80
