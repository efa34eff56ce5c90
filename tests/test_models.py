"""Encoder, predictor and positional embedding: shapes, gradients, padding, attention, counts."""

from __future__ import annotations

import dataclasses
import importlib.machinery
import importlib.util
import math
import sys
import types

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


def test_flash_attn_requested_but_missing(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "flash_attn" else real(name, *a))
    with pytest.raises(InputError, match="flash_attn package is not installed"):
        BrainEncoder(tiny(attention="flash_attn"), gradients())


def test_flash_attn_installed_falls_back_to_sdpa_off_gpu(monkeypatch):
    calls = []
    fake = types.ModuleType("flash_attn")
    fake.__spec__ = importlib.machinery.ModuleSpec("flash_attn", None)
    fake.flash_attn_qkvpacked_func = lambda qkv: calls.append(qkv)
    monkeypatch.setitem(sys.modules, "flash_attn", fake)
    torch.manual_seed(0)
    flash = BrainEncoder(tiny(attention="flash_attn"), gradients())
    torch.manual_seed(0)
    sdpa = BrainEncoder(tiny(), gradients())
    torch.testing.assert_close(flash(sample()), sdpa(sample()))
    assert calls == []  # CPU float32 input: the kernel needs CUDA fp16/bf16


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
