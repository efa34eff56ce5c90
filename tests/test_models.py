"""Encoder, predictor and positional embedding: shapes, gradients, padding, attention, counts."""

from __future__ import annotations

import dataclasses
import importlib.machinery
import importlib.util
import math
import sys
import types
import warnings

import numpy as np
import pytest
import torch

from brainjepa.errors import InputError
from brainjepa.models import (
    BrainEncoder,
    BrainPredictor,
    ModelConfig,
    PatchEmbed,
    build_model,
    count_parameters,
    layers,
    model_info,
)

R, T, P, G = 12, 32, 16, 6  # 12 ROIs x 2 time patches = 24 tokens
W, N = T // P, R * (T // P)

CONFIGS = {
    "tiny": ModelConfig(size="tiny", n_rois=R, n_timesteps=T, n_gradients=G),
    "small": ModelConfig(size="small", n_rois=R, n_timesteps=T, n_gradients=G, depth=2, predictor_depth=1),
}
# Reference counts at 450 x 160 (docs/reference.md section 3), millions.
REFERENCE = {
    "small": {"encoder": (22.17, 21.31), "predictor": (3.25, 2.82)},
    "base": {"encoder": (86.81, 85.08), "predictor": (12.11, 11.24)},
    "large": {"encoder": (304.65, None), "predictor": (22.95, 22.09)},
}


def gradients(rois: int = R, cols: int = G, seed: int = 0) -> torch.Tensor:
    return torch.randn(rois, cols, generator=torch.Generator().manual_seed(seed))


def sample(batch: int = 2, seed: int = 1) -> torch.Tensor:
    return torch.randn(batch, 1, R, T, generator=torch.Generator().manual_seed(seed))


def random_index(batch: int, k: int, seed: int = 2) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.stack([torch.randperm(N, generator=g)[:k] for _ in range(batch)])


def tiny(**overrides) -> ModelConfig:
    return dataclasses.replace(CONFIGS["tiny"], **overrides)


# ------------------------------------------------------------------------------------ forward/backward
@pytest.mark.parametrize("preset", list(CONFIGS))
def test_encoder_forward_backward(preset):
    torch.manual_seed(0)
    encoder = BrainEncoder(CONFIGS[preset], gradients())
    D = encoder.embed_dim
    out = encoder(sample())
    assert out.shape == (2, N, D)
    assert encoder.forward_features(sample()).shape == (2, N, D)
    idx = random_index(2, 5)
    part = encoder(sample(), idx)
    assert part.shape == (2, 5, D)
    part.square().mean().backward()
    grads = {n: p.grad for n, p in encoder.named_parameters() if p.requires_grad}
    assert all(g is not None and torch.isfinite(g).all() for g in grads.values())
    assert grads["pos_embed.spatial_proj.weight"].abs().sum() > 0
    assert encoder.pos_embed.temporal.grad is None


@pytest.mark.parametrize("preset", list(CONFIGS))
def test_predictor_forward_backward(preset):
    torch.manual_seed(0)
    cfg = CONFIGS[preset].resolved()
    predictor = BrainPredictor(cfg, gradients())
    ctx_idx, tgt_idx = random_index(2, 7), random_index(2, 4, seed=3)
    context = torch.randn(2, 7, cfg.embed_dim)
    out = predictor(context, ctx_idx, tgt_idx)
    assert out.shape == (2, 4, cfg.embed_dim)
    out.square().mean().backward()
    assert predictor.mask_token.grad is not None and predictor.mask_token.grad.abs().sum() > 0
    assert predictor.embed.weight.grad.abs().sum() > 0
    assert predictor.pos_embed.temporal.grad is None


def test_build_model_and_counts():
    encoder, predictor = build_model(CONFIGS["tiny"], gradients())
    counts = count_parameters(encoder)
    frozen = encoder.pos_embed.temporal.numel()
    assert counts["total"] - counts["trainable"] == frozen == N * 96 // 2
    assert count_parameters(predictor)["total"] - count_parameters(predictor)["trainable"] == N * 48 // 2
    assert "pos_embed.gradients" in encoder.state_dict() and "pos_embed.gradients" in predictor.state_dict()


def test_drop_path_training_and_eval():
    encoder = BrainEncoder(tiny(drop_path=0.5), gradients())
    encoder.train()
    encoder(sample()).sum().backward()
    encoder.eval()
    with torch.no_grad():
        assert torch.equal(encoder(sample()), encoder(sample()))


def test_bad_input_shape():
    encoder = BrainEncoder(CONFIGS["tiny"], gradients())
    with pytest.raises(ValueError, match=r"\[B, 1, 12, 32\]"):
        encoder(torch.randn(2, 1, R, T + 16))


# ------------------------------------------------------------------------------------ tokens and masks
def test_gather_matches_slicing_features_at_depth_zero():
    encoder = BrainEncoder(tiny(depth=0), gradients())
    x, idx = sample(), random_index(2, 9)
    full = encoder.forward_features(x)
    expected = torch.stack([full[b, idx[b]] for b in range(2)])
    torch.testing.assert_close(encoder(x, idx), expected)


def test_tokens_are_roi_major():
    embed = PatchEmbed(R, T, P, dim=2)
    with torch.no_grad():
        embed.proj.weight.zero_()
        embed.proj.weight[0, 0, 0, 0] = 1.0  # channel 0: first time step of the patch
        embed.proj.weight[1, 0, 0, :] = 1.0 / P  # channel 1: mean of the patch
        embed.proj.bias.zero_()
    x = torch.zeros(1, 1, R, T)
    for r in range(R):
        x[0, 0, r] = 100 * r + torch.arange(T, dtype=torch.float32)
    with torch.no_grad():
        tokens = embed(x)[0]
    for token in range(N):
        roi, t = divmod(token, W)
        assert tokens[token, 0] == 100 * roi + t * P
        assert tokens[token, 1].item() == pytest.approx(100 * roi + t * P + (P - 1) / 2)


def test_encoder_padding_does_not_change_valid_tokens():
    torch.manual_seed(0)
    encoder = BrainEncoder(CONFIGS["tiny"], gradients()).eval()
    x = sample()
    idx = random_index(2, 10)
    valid = torch.ones(2, 10, dtype=torch.bool)
    valid[1, 6:] = False  # sample 1 has 6 real tokens, padded with 4 arbitrary ones
    with torch.no_grad():
        padded = encoder(x, idx, valid)
        alone = encoder(x[1:], idx[1:, :6])
        full = encoder(x[:1], idx[:1])
        idx_other = idx.clone()
        idx_other[1, 6:] = torch.tensor([0, 1, 2, 3])
        repadded = encoder(x, idx_other, valid)
    torch.testing.assert_close(padded[1, :6], alone[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(padded[0], full[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(repadded[1, :6], padded[1, :6], atol=1e-5, rtol=1e-5)
    assert torch.isfinite(padded).all()


def test_encoder_sample_without_valid_tokens_stays_finite():
    encoder = BrainEncoder(CONFIGS["tiny"], gradients())
    valid = torch.ones(2, 5, dtype=torch.bool)
    valid[0] = False
    out = encoder(sample(), random_index(2, 5), valid)
    assert torch.isfinite(out).all()
    out.sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in encoder.parameters() if p.grad is not None)


def test_predictor_padding_does_not_change_valid_predictions():
    torch.manual_seed(0)
    cfg = CONFIGS["tiny"].resolved()
    predictor = BrainPredictor(cfg, gradients()).eval()
    ctx_idx, tgt_idx = random_index(2, 8), random_index(2, 5, seed=5)
    context = torch.randn(2, 8, cfg.embed_dim)
    ctx_valid = torch.ones(2, 8, dtype=torch.bool)
    tgt_valid = torch.ones(2, 5, dtype=torch.bool)
    ctx_valid[0, 5:] = False
    tgt_valid[0, 3:] = False
    with torch.no_grad():
        padded = predictor(context, ctx_idx, tgt_idx, ctx_valid, tgt_valid)
        alone = predictor(context[:1, :5], ctx_idx[:1, :5], tgt_idx[:1, :3])
        other = predictor(context[1:], ctx_idx[1:], tgt_idx[1:])
    torch.testing.assert_close(padded[0, :3], alone[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(padded[1], other[0], atol=1e-5, rtol=1e-5)
    assert torch.isfinite(padded).all()


# ------------------------------------------------------------------------------------ attention
def test_exact_attention_path_matches_sdpa():
    torch.manual_seed(0)
    encoder = BrainEncoder(CONFIGS["tiny"], gradients()).eval()
    x = sample()
    with torch.no_grad():
        tokens, weights = encoder.forward_with_attention(x)
        reference = encoder(x)
    torch.testing.assert_close(tokens, reference, atol=1e-5, rtol=1e-5)
    assert len(weights) == 4 and all(w.shape == (2, 4, N, N) for w in weights)
    torch.testing.assert_close(weights[0].sum(-1), torch.ones(2, 4, N))
    with torch.no_grad():
        _, last = encoder.forward_with_attention(x, layers=[-1])
    torch.testing.assert_close(last[0], weights[-1])


def test_exact_attention_path_with_padding():
    torch.manual_seed(0)
    encoder = BrainEncoder(CONFIGS["tiny"], gradients()).eval()
    idx, valid = random_index(2, 8), torch.ones(2, 8, dtype=torch.bool)
    valid[1, 5:] = False
    with torch.no_grad():
        tokens, weights = encoder.forward_with_attention(sample(), [0], idx, valid)
        reference = encoder(sample(), idx, valid)
    torch.testing.assert_close(tokens, reference, atol=1e-5, rtol=1e-5)
    assert weights[0][1, :, :, 5:].abs().max() == 0
    with pytest.raises(IndexError):
        encoder.forward_with_attention(sample(), layers=[4])


def _no_flash_attn(monkeypatch) -> None:
    """flash_attn absent, and its one warning per process not given yet."""
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "flash_attn" else real(name, *a))
    monkeypatch.setattr(layers, "_FLASH_WARNED", False)


def test_flash_attn_requested_but_missing_falls_back_to_sdpa_with_one_warning(monkeypatch):
    _no_flash_attn(monkeypatch)
    with pytest.warns(RuntimeWarning, match="flash_attn package is not installed") as caught:
        torch.manual_seed(0)
        flash = BrainEncoder(tiny(attention="flash_attn"), gradients())
        BrainPredictor(tiny(attention="flash_attn"), gradients())
    assert len([w for w in caught if issubclass(w.category, RuntimeWarning)]) == 1
    assert {m.backend for m in flash.modules() if isinstance(m, layers.Attention)} == {"sdpa"}
    torch.manual_seed(0)
    torch.testing.assert_close(flash(sample()), BrainEncoder(tiny(), gradients())(sample()))


def _fake_flash_attn(monkeypatch, calls: list) -> None:
    """A flash_attn module whose kernels are SDPA written out per sample, recording their calls."""

    def dense(qkv):  # [B, N, 3, H, d] -> [B, N, H, d]
        calls.append(("dense", tuple(qkv.shape)))
        q, k, v = qkv.permute(2, 0, 3, 1, 4)
        return torch.nn.functional.scaled_dot_product_attention(q, k, v).transpose(1, 2)

    def varlen(qkv, cu_seqlens, max_seqlen):  # [T, 3, H, d] -> [T, H, d]
        calls.append(("varlen", tuple(cu_seqlens.tolist()), max_seqlen, cu_seqlens.dtype))
        bounds = cu_seqlens.tolist()
        out = []
        for a, b in zip(bounds[:-1], bounds[1:]):
            q, k, v = qkv[a:b].permute(1, 2, 0, 3)[:, None]
            out.append(torch.nn.functional.scaled_dot_product_attention(q, k, v)[0].transpose(0, 1))
        return torch.cat(out)

    fake = types.ModuleType("flash_attn")
    fake.__spec__ = importlib.machinery.ModuleSpec("flash_attn", None)
    fake.flash_attn_qkvpacked_func = dense
    fake.flash_attn_varlen_qkvpacked_func = varlen
    monkeypatch.setitem(sys.modules, "flash_attn", fake)


def test_flash_attn_installed_falls_back_to_sdpa_off_gpu(monkeypatch):
    calls = []
    _fake_flash_attn(monkeypatch, calls)
    torch.manual_seed(0)
    flash = BrainEncoder(tiny(attention="flash_attn"), gradients())
    torch.manual_seed(0)
    sdpa = BrainEncoder(tiny(), gradients())
    torch.testing.assert_close(flash(sample()), sdpa(sample()))
    assert calls == []  # CPU float32 input: the kernel needs CUDA fp16/bf16


def test_flash_attn_kernels_where_they_fit_dense_and_packed(monkeypatch):
    """Where flash_attn fits (CUDA fp16/bf16, pretended here), unpadded batches take its dense kernel and packed
    ones its varlen kernel, with int32 offsets and the longest sample, and give SDPA's outputs."""
    calls = []
    _fake_flash_attn(monkeypatch, calls)
    monkeypatch.setattr(layers.Attention, "_flash_fits", lambda self, qkv: self._flash is not None)
    torch.manual_seed(0)
    flash = BrainEncoder(tiny(attention="flash_attn"), gradients()).eval()
    sdpa = layers.set_attention_backend(BrainEncoder(tiny(), gradients()).eval(), "sdpa")
    sdpa.load_state_dict(flash.state_dict())
    x, idx, valid, lengths = padded_batch()
    with torch.no_grad():
        torch.testing.assert_close(flash(x), sdpa(x))
        torch.testing.assert_close(flash(x, idx, valid, lengths=lengths), sdpa(x, idx, valid, lengths=lengths))
    assert calls[0] == ("dense", (3, N, 3, 4, 24)) and len(calls) == 8
    assert set(calls[4:]) == {("varlen", (0, 10, 16, 24), 10, torch.int32)}
    assert layers.set_attention_backend(flash, "sdpa") is flash
    calls.clear()
    with torch.no_grad():
        flash(x)
    assert calls == []


@pytest.mark.parametrize("runtime", ["", "flash_attn"])
def test_checkpoint_saved_with_flash_attn_evaluates_where_flash_attn_is_absent(tmp_path, monkeypatch, runtime):
    """The backend is not restored from a file: a weights file whose model_config says flash_attn (as written
    before) loads for evaluation without the package, with SDPA; $BRAINJEPA_ATTENTION chooses at run time (asking
    for flash_attn without the package: one warning, SDPA)."""
    from brainjepa.evaluate.encoders import load_encoder
    from brainjepa.models.weights import load_weights, save_weights

    _no_flash_attn(monkeypatch)
    monkeypatch.setenv("BRAINJEPA_ATTENTION", runtime)
    cfg = CONFIGS["tiny"].resolved()
    assert "attention" not in dataclasses.replace(cfg, attention="flash_attn").to_dict()  # checkpoints store none
    torch.manual_seed(0)
    encoder, predictor = build_model(cfg, gradients())
    states = {"encoder": encoder.state_dict(), "target_encoder": encoder.state_dict(),
              "predictor": predictor.state_dict()}
    save_weights(tmp_path / "w.pt", states, {**cfg.to_dict(), "attention": "flash_attn"}, source="test")  # as before
    assert load_weights(tmp_path / "w.pt")[1]["attention"] == "flash_attn"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        loaded, _ = load_encoder({"kind": "checkpoint", "path": str(tmp_path / "w.pt")},
                                 [f"roi{i}" for i in range(R)], T)
    flash_warnings = [w for w in caught if "flash_attn package is not installed" in str(w.message)]
    assert len(flash_warnings) == (1 if runtime else 0)
    assert {m.backend for m in loaded.modules() if isinstance(m, layers.Attention)} == {"sdpa"}
    assert loaded.cfg.attention == (runtime or "sdpa")
    with torch.no_grad():
        torch.testing.assert_close(loaded.eval()(sample()), encoder.eval()(sample()))
    monkeypatch.setenv("BRAINJEPA_ATTENTION", "xformers")
    with pytest.raises(InputError, match="BRAINJEPA_ATTENTION='xformers'"):
        ModelConfig.from_checkpoint(cfg.to_dict())


# ------------------------------------------------------------------------------------ padding: no mask, packed
def padded_batch(lengths: tuple[int, ...] = (10, 6, 8), n: int = 10, seed: int = 4):
    """x [3, 1, R, T], token_idx [3, n] (valid tokens first, padding 0), token_valid [3, n] and the lengths."""
    x = sample(len(lengths), seed=seed)
    valid = torch.arange(n)[None, :] < torch.tensor(lengths)[:, None]
    idx = torch.where(valid, random_index(len(lengths), n, seed=seed), 0)
    return x, idx, valid, lengths


class SdpaSpy:
    """Stands in for F.scaled_dot_product_attention: records each call's attn_mask and query shape."""

    def __init__(self, monkeypatch):
        self.real = torch.nn.functional.scaled_dot_product_attention
        self.masks, self.shapes = [], []
        monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", self)

    def __call__(self, q, k, v, attn_mask=None, **kwargs):
        self.masks.append(attn_mask)
        self.shapes.append(tuple(q.shape))
        return self.real(q, k, v, attn_mask=attn_mask, **kwargs)


def test_without_lengths_padding_still_takes_the_mask_and_valid_outputs_are_unchanged(monkeypatch):
    """The key-padding-mask path (no lengths) is kept for callers without them: SDPA gets the mask, and each
    sample's valid tokens are what the sample alone, unpadded, gives."""
    torch.manual_seed(0)
    encoder = BrainEncoder(CONFIGS["tiny"], gradients()).eval()
    x, idx, valid, lengths = padded_batch()
    spy = SdpaSpy(monkeypatch)
    with torch.no_grad():
        masked = encoder(x, idx, valid)
    assert len(spy.masks) == 4 and all(m is not None and m.shape == (3, 1, 1, 10) for m in spy.masks)
    with torch.no_grad():
        for b, k in enumerate(lengths):
            torch.testing.assert_close(masked[b, :k], encoder(x[b:b + 1], idx[b:b + 1, :k])[0], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("drop", [0.0, 0.3])
def test_packed_encoder_and_predictor_equal_the_masked_path_on_valid_tokens(monkeypatch, drop):
    """With the collator's lengths a padded batch is packed: SDPA gets no mask and sees each sample alone (no
    padded token computed), and outputs and gradients on valid tokens equal the masked path's (drop path, one
    draw per sample, included)."""
    torch.manual_seed(0)
    encoder, predictor = build_model(tiny(drop_path=drop), gradients())
    x, idx, valid, lengths = padded_batch()
    tgt_lengths = (5, 2, 4)
    tgt_valid = torch.arange(5)[None, :] < torch.tensor(tgt_lengths)[:, None]
    tgt_idx = torch.where(tgt_valid, random_index(3, 5, seed=9), 0)

    def run(packed: bool):
        for m in (encoder, predictor):
            m.zero_grad()
        torch.manual_seed(1)
        c_len, t_len = (lengths, tgt_lengths) if packed else (None, None)
        z = encoder(x, idx, valid, lengths=c_len)
        pred = predictor(z, idx, tgt_idx, valid, tgt_valid, context_lengths=c_len, target_lengths=t_len)
        (pred[tgt_valid].square().sum() + z[valid].sum()).backward()
        grads = {n: p.grad.clone() for m in (encoder, predictor) for n, p in m.named_parameters() if p.grad is not None}
        return z.detach(), pred.detach(), grads

    z_mask, pred_mask, grads_mask = run(False)
    spy = SdpaSpy(monkeypatch)
    z_pack, pred_pack, grads_pack = run(True)
    assert spy.masks and all(m is None for m in spy.masks)
    assert set(spy.shapes) == {(1, 4, k, 24) for k in (6, 8, 10)} | {(1, 4, k, 12) for k in (8, 12, 15)}
    torch.testing.assert_close(z_pack[valid], z_mask[valid], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(pred_pack[tgt_valid], pred_mask[tgt_valid], atol=1e-5, rtol=1e-5)
    assert z_pack[~valid].abs().max() == 0 and torch.isfinite(pred_pack).all()
    assert grads_pack.keys() == grads_mask.keys()
    for name in grads_mask:
        torch.testing.assert_close(grads_pack[name], grads_mask[name], atol=1e-5, rtol=1e-4, msg=name)


def test_full_lengths_mean_no_mask_and_bad_lengths_are_refused(monkeypatch):
    torch.manual_seed(0)
    encoder, predictor = build_model(CONFIGS["tiny"], gradients())
    x, idx, valid, _ = padded_batch((10, 10, 10))
    spy = SdpaSpy(monkeypatch)
    z = encoder(x, idx, valid, lengths=(10, 10, 10))
    predictor(z, idx, idx[:, :4], valid, valid[:, :4], context_lengths=(10,) * 3, target_lengths=(4,) * 3)
    assert len(spy.masks) == 6 and all(m is None for m in spy.masks)
    assert {s[0] for s in spy.shapes} == {3}  # one batched call per block: SDPA may pick flash
    with pytest.raises(ValueError, match="do not fit"):
        encoder(x, idx, valid, lengths=(10, 11, 3))
    with pytest.raises(ValueError, match="do not fit"):
        encoder(x, idx, valid, lengths=(10, 3))


@pytest.mark.parametrize("mode", ["random", "reference", "paper"])
def test_training_step_calls_sdpa_without_a_mask(monkeypatch, mode):
    """jepa_step (reference, paper) and mae_step (random: the MAE baseline) on collated batches: the context
    encoder, the predictor and the target encoder never pass SDPA a mask; only a padded (paper) batch is
    packed, and then every token the blocks compute is a valid one."""
    from brainjepa.train.jepa import jepa_step, mae_step
    from brainjepa.train.masks import MaskCollator, MaskConfig

    r, w = 64, 10
    cfg = ModelConfig(size="tiny", n_rois=r, n_timesteps=w * P, n_gradients=G, depth=1, predictor_depth=1)
    torch.manual_seed(0)
    collator = MaskCollator(r, w, MaskConfig(mode=mode), seed=0)
    items = [(torch.randn(1, r, w * P), torch.zeros(1)) for _ in range(4)]
    batch = collator(items)
    encoder, target = BrainEncoder(cfg, gradients(r)), BrainEncoder(cfg, gradients(r))
    predictor = BrainPredictor(cfg, gradients(r), out_dim=P if mode == "random" else None)
    rows = {}  # tokens each module's blocks compute: batch x sequence of the MLP's input
    names = {id(m): name for name, module in (("encoder", encoder), ("target", target), ("predictor", predictor))
             for m in module.modules() if isinstance(m, layers.Mlp)}
    real_mlp = layers.Mlp.forward

    def counting_mlp(self, x):
        rows.setdefault(names[id(self)], x.shape[0] * x.shape[1])  # the first block's
        return real_mlp(self, x)

    monkeypatch.setattr(layers.Mlp, "forward", counting_mlp)
    spy = SdpaSpy(monkeypatch)
    if mode == "random":
        loss, _ = mae_step(encoder, predictor, batch, P)
    else:
        loss, _ = jepa_step(encoder, target, predictor, batch, "mse")
        assert rows.pop("target") == 4 * r * w
    assert torch.isfinite(loss)
    assert spy.masks and all(m is None for m in spy.masks)
    c_len, t_len = batch["context_lengths"], batch["target_lengths"]
    nc, nt = batch["context_idx"].shape[1], batch["target_idx"].shape[1]
    computed = [rows["encoder"], rows["predictor"]]
    if mode == "paper":
        assert min(c_len) < nc  # padded
        assert computed == [sum(c_len), sum(c_len) + sum(t_len)]  # no padded token computed
        assert computed[0] + computed[1] < 0.9 * (4 * nc + 4 * (nc + nt))
    else:
        assert set(c_len) == {nc} and set(t_len) == {nt} and computed == [4 * nc, 4 * (nc + nt)]


# ------------------------------------------------------------------------------------ positional embedding
def sincos_formula(dim: int, position: int) -> np.ndarray:
    """Written from the reference text: first dim/2 sin, next dim/2 cos, w_i = 1/10000^(i/(dim/2))."""
    half = dim // 2
    freq = np.array([1.0 / 10000 ** (i / half) for i in range(half)])
    return np.concatenate([np.sin(position * freq), np.cos(position * freq)])


@pytest.mark.parametrize("module", ["encoder", "predictor"])
def test_temporal_half_is_frozen_sincos_of_time_patch(module):
    cls = BrainEncoder if module == "encoder" else BrainPredictor
    model = cls(CONFIGS["tiny"], gradients())
    table = model.pos_embed.temporal
    dim = model.pos_embed().shape[1]
    assert not table.requires_grad and table.shape == (N, dim // 2)
    expected = np.stack([sincos_formula(dim // 2, token % W) for token in range(N)])
    np.testing.assert_allclose(table.numpy(), expected, atol=1e-6)
    assert torch.equal(model.pos_embed()[:, : dim // 2], table)


def test_spatial_half_rescaled_and_repeated_per_roi():
    model = BrainEncoder(CONFIGS["tiny"], gradients())
    pe = model.pos_embed()
    spatial = pe[:, pe.shape[1] // 2:]
    assert spatial.min().item() == pytest.approx(-1.0) and spatial.max().item() == pytest.approx(1.0)
    by_roi = spatial.reshape(R, W, -1)
    assert torch.equal(by_roi, by_roi[:, :1].expand_as(by_roi))
    raw = model.pos_embed.spatial_proj(model.pos_embed.gradients)
    expected = (raw - raw.min()) / (raw.max() - raw.min()) * 2 - 1
    torch.testing.assert_close(by_roi[:, 0], expected)


def test_predictor_has_its_own_positional_embedding():
    encoder, predictor = build_model(CONFIGS["tiny"], gradients())
    assert predictor.pos_embed.spatial_proj.weight.shape == (24, G)
    assert encoder.pos_embed.spatial_proj.weight.shape == (48, G)
    assert predictor.pos_embed().shape == (N, 48)


def test_positional_alternatives():
    centroids = torch.randn(R, 3) * 50
    roi = BrainEncoder(tiny(positional="roi_sincos"))
    table = roi.pos_embed.spatial
    assert not table.requires_grad
    np.testing.assert_allclose(table[5 * W + 1].numpy(), sincos_formula(48, 5), atol=1e-6)
    cen_enc, cen_pred = build_model(tiny(positional="centroid"), None, centroids)
    spatial = cen_enc.pos_embed()[:, 48:]
    assert spatial.min().item() == pytest.approx(-1.0) and spatial.max().item() == pytest.approx(1.0)
    assert "pos_embed.centroids" in cen_enc.state_dict()
    for encoder, predictor in ((roi, BrainPredictor(tiny(positional="roi_sincos"))), (cen_enc, cen_pred)):
        out = predictor(encoder(sample(), random_index(2, 6)), random_index(2, 6), random_index(2, 3, seed=7))
        out.sum().backward()
        assert out.shape == (2, 3, 96)
    with pytest.raises(InputError, match="centroid"):
        BrainEncoder(tiny(positional="centroid"))


def test_gradients_required_and_checked():
    with pytest.raises(InputError, match="gradient"):
        BrainEncoder(CONFIGS["tiny"])
    with pytest.raises(InputError, match=r"\[12, 6\]"):
        BrainEncoder(CONFIGS["tiny"], gradients(R, G + 1))


# ------------------------------------------------------------------------------------ init and counts
@pytest.mark.parametrize("scheme", ["trunc_normal", "xavier"])
def test_init_schemes(scheme):
    encoder = BrainEncoder(ModelConfig(size="tiny", n_rois=R, n_timesteps=T, n_gradients=G, init=scheme),
                           gradients())
    fc1 = encoder.blocks[0].mlp.fc1.weight  # [384, 96]
    if scheme == "trunc_normal":
        assert fc1.std().item() == pytest.approx(0.02, rel=0.1)
    else:
        bound = math.sqrt(6 / (96 + 384))
        assert fc1.abs().max() <= bound and fc1.std().item() == pytest.approx(bound / math.sqrt(3), rel=0.1)
    assert torch.all(encoder.blocks[0].attn.qkv.bias == 0) and torch.all(encoder.norm.weight == 1)
    predictor = BrainPredictor(tiny(init=scheme), gradients())
    assert predictor.mask_token.std().item() == pytest.approx(0.02, rel=0.5)


@pytest.mark.parametrize("size", list(REFERENCE))
def test_model_info_matches_reference_counts(size):
    info = model_info(size, 450, 160)
    for module, (total, trainable) in REFERENCE[size].items():
        assert info[module]["total"] / 1e6 == pytest.approx(total, rel=0.01)
        if trainable is not None:
            assert info[module]["trainable"] / 1e6 == pytest.approx(trainable, rel=0.01)


# ------------------------------------------------------------------------------------ config
def test_config_presets_and_overrides():
    cfg = ModelConfig(size="small").resolved()
    assert (cfg.embed_dim, cfg.depth, cfg.num_heads, cfg.predictor_dim, cfg.predictor_depth) == (384, 12, 6, 192, 6)
    assert ModelConfig(size="base", depth=3).resolved().depth == 3
    assert (cfg.n_time_patches, cfg.n_tokens) == (10, 4500)
    assert ModelConfig.from_dict(ModelConfig(size="large").to_dict()) == ModelConfig(size="large")


def test_config_errors():
    with pytest.raises(InputError, match="unknown key.*embed_dims"):
        ModelConfig.from_dict({"size": "base", "embed_dims": 768})
    with pytest.raises(InputError, match="positional"):
        ModelConfig(positional="learned")
    with pytest.raises(InputError, match="multiple of model.patch_size"):
        ModelConfig(n_timesteps=150)
    with pytest.raises(InputError, match="multiple of 4"):
        ModelConfig(size="tiny", embed_dim=90).resolved()
