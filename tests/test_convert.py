"""Official Brain-JEPA checkpoint layout <-> our state dicts."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from brainjepa.errors import InputError
from brainjepa.group.gradients import write_gradients
from brainjepa.models import BrainEncoder, BrainPredictor, ModelConfig, build_model
from brainjepa.models.convert import config_from_official, from_official, strip_ddp_prefix, to_official
from brainjepa.models.weights import MODULES, load_weights


def block_shapes(prefix: str, dim: int, mlp: int = 4) -> dict[str, tuple[int, ...]]:
    shapes = {"norm1.weight": (dim,), "norm1.bias": (dim,),
              "attn.qkv.weight": (3 * dim, dim), "attn.qkv.bias": (3 * dim,),
              "attn.proj.weight": (dim, dim), "attn.proj.bias": (dim,),
              "norm2.weight": (dim,), "norm2.bias": (dim,),
              "mlp.fc1.weight": (mlp * dim, dim), "mlp.fc1.bias": (mlp * dim,),
              "mlp.fc2.weight": (dim, mlp * dim), "mlp.fc2.bias": (dim,)}
    return {f"{prefix}{k}": v for k, v in shapes.items()}


def official_shapes(dim: int = 768, depth: int = 12, pdim: int = 384, pdepth: int = 6, rois: int = 450,
                    patches: int = 10, patch: int = 16, grads: int = 30) -> dict[str, dict[str, tuple[int, ...]]]:
    """Key -> shape of the public checkpoint, written from its published layout (ViT-B by default)."""
    encoder = {"patch_embed.proj.weight": (dim, 1, 1, patch), "patch_embed.proj.bias": (dim,),
               "pos_embed_proj.emb_h": (rois * patches, dim // 2),
               "pos_embed_proj.predictor_pos_embed_proj.weight": (dim // 2, grads),
               "pos_embed_proj.predictor_pos_embed_proj.bias": (dim // 2,),
               "norm.weight": (dim,), "norm.bias": (dim,)}
    for i in range(depth):
        encoder |= block_shapes(f"blocks.{i}.", dim)
    predictor = {"mask_token": (1, 1, pdim),
                 "predictor_embed.weight": (pdim, dim), "predictor_embed.bias": (pdim,),
                 "predictor_2dpe_proj.emb_h": (rois * patches, pdim // 2),
                 "predictor_2dpe_proj.predictor_pos_embed_proj.weight": (pdim // 2, grads),
                 "predictor_2dpe_proj.predictor_pos_embed_proj.bias": (pdim // 2,),
                 "predictor_norm.weight": (pdim,), "predictor_norm.bias": (pdim,),
                 "predictor_proj.weight": (dim, pdim), "predictor_proj.bias": (dim,)}
    for i in range(pdepth):
        predictor |= block_shapes(f"predictor_blocks.{i}.", pdim)
    return {"encoder": encoder, "predictor": predictor, "target_encoder": dict(encoder)}


def official_checkpoint(shapes: dict[str, dict[str, tuple[int, ...]]], device: str = "cpu",
                        prefix: str = "module.", seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    make = (lambda s: torch.empty(s, device="meta")) if device == "meta" else (lambda s: torch.randn(s, generator=g))
    ckpt = {name: {prefix + k: make(s) for k, s in state.items()} for name, state in shapes.items()}
    return ckpt | {"epoch": 300, "opt": {}, "scaler": None}


GRADIENTS = torch.randn(450, 30, generator=torch.Generator().manual_seed(1))


def test_vit_base_layout_loads_strictly_into_our_modules():
    shapes = official_shapes()
    states = from_official(official_checkpoint(shapes, device="meta"), GRADIENTS)
    cfg = config_from_official(official_checkpoint(shapes, device="meta"), 450)
    assert (cfg.size, cfg.embed_dim, cfg.depth, cfg.num_heads, cfg.predictor_dim, cfg.predictor_depth,
            cfg.n_timesteps, cfg.n_gradients) == ("base", 768, 12, 12, 384, 6, 160, 30)
    with torch.device("meta"):
        encoder, predictor = build_model(cfg, torch.empty(450, 30))
    encoder.load_state_dict(states["encoder"], strict=True, assign=True)
    encoder.load_state_dict(states["target_encoder"], strict=True, assign=True)
    predictor.load_state_dict(states["predictor"], strict=True, assign=True)
    back = to_official(states)
    for name, state in shapes.items():
        assert {k: tuple(v.shape) for k, v in back[name].items()} == {"module." + k: s for k, s in state.items()}


@pytest.mark.parametrize("prefix", ["module.", ""])
def test_round_trip_values_reduced_depth(prefix):
    shapes = official_shapes(depth=2, pdepth=1)
    ckpt = official_checkpoint(shapes, prefix=prefix)
    states = from_official(ckpt, GRADIENTS)
    cfg = ModelConfig(size="base", depth=2, predictor_depth=1)
    encoder, predictor = build_model(cfg, GRADIENTS)
    encoder.load_state_dict(states["target_encoder"], strict=True)
    predictor.load_state_dict(states["predictor"], strict=True)
    assert torch.equal(encoder.pos_embed.gradients, GRADIENTS)
    back = to_official({"target_encoder": encoder.state_dict(), "predictor": predictor.state_dict()})
    for name in ("target_encoder", "predictor"):
        original = strip_ddp_prefix(ckpt[name])
        assert all(k.startswith("module.") for k in back[name])
        exported = strip_ddp_prefix(back[name])
        assert exported.keys() == original.keys()
        assert all(torch.equal(exported[k], original[k]) for k in original)


def test_export_loads_with_weights_only_like_brainmarks(tmp_path):
    cfg = ModelConfig(size="tiny", n_rois=12, n_timesteps=32, n_gradients=30)
    grads = GRADIENTS[:12]
    encoder, predictor = build_model(cfg, grads)
    path = tmp_path / "ckpt.pth"
    torch.save(to_official({"encoder": encoder.state_dict(), "target_encoder": encoder.state_dict(),
                            "predictor": predictor.state_dict()}), path)
    loaded = torch.load(path, weights_only=True)
    target = strip_ddp_prefix(loaded["target_encoder"])
    assert set(target) == set(official_shapes(96, 4, 48, 2, rois=12, patches=2)["target_encoder"])
    assert all(type(v) is torch.Tensor for v in target.values())
    # and back into a fresh model, strictly, with identical outputs
    states = from_official(loaded, grads, cfg)
    fresh = BrainEncoder(cfg, grads)
    fresh.load_state_dict(states["target_encoder"], strict=True)
    x = torch.randn(2, 1, 12, 32)
    with torch.no_grad():
        torch.testing.assert_close(fresh(x), encoder(x))
    pred = BrainPredictor(cfg, grads)
    pred.load_state_dict(states["predictor"], strict=True)


def test_missing_key_is_named():
    ckpt = official_checkpoint(official_shapes(depth=2, pdepth=1), device="meta")
    del ckpt["target_encoder"]["module.blocks.1.mlp.fc2.bias"]
    with pytest.raises(InputError, match=r"target_encoder: missing keys: blocks\.1\.mlp\.fc2\.bias"):
        from_official(ckpt, GRADIENTS)


def test_unexpected_key_is_named():
    ckpt = official_checkpoint(official_shapes(depth=2, pdepth=1), device="meta")
    ckpt["predictor"]["module.predictor_blocks.0.attn.rel_pos"] = torch.empty(3, device="meta")
    ckpt["encoder"]["module.cls_token"] = torch.empty(1, 1, 768, device="meta")
    with pytest.raises(InputError) as info:
        from_official(ckpt, GRADIENTS)
    assert "predictor: unexpected keys: predictor_blocks.0.attn.rel_pos" in str(info.value)
    assert "encoder: unexpected keys: cls_token" in str(info.value)


def test_shape_mismatch_is_named():
    ckpt = official_checkpoint(official_shapes(depth=2, pdepth=1), device="meta")
    ckpt["encoder"]["module.blocks.0.attn.qkv.weight"] = torch.empty(2304, 384, device="meta")
    with pytest.raises(InputError, match=r"blocks\.0\.attn\.qkv\.weight: \(2304, 384\) \(expected \(2304, 768\)\)"):
        from_official(ckpt, GRADIENTS)


def test_wrong_gradients_and_not_a_checkpoint():
    ckpt = official_checkpoint(official_shapes(depth=1, pdepth=1), device="meta")
    with pytest.raises(InputError, match="gradients"):
        from_official(ckpt)
    with pytest.raises(InputError, match="n_gradients|30"):
        from_official(ckpt, GRADIENTS[:, :20])
    with pytest.raises(InputError, match="none of encoder, predictor, target_encoder"):
        from_official({"model": {}}, GRADIENTS)


def test_roi_sincos_maps_to_official_origin_mode():
    cfg = ModelConfig(size="tiny", n_rois=12, n_timesteps=32, positional="roi_sincos")
    encoder = BrainEncoder(cfg)
    official = to_official({"target_encoder": encoder.state_dict()})
    assert "module.pos_embed_proj.emb_w" in official["target_encoder"]
    states = from_official(official, cfg=cfg)
    BrainEncoder(cfg).load_state_dict(states["target_encoder"], strict=True)


def test_export_errors():
    cfg = ModelConfig(size="tiny", n_rois=12, n_timesteps=32, positional="centroid")
    encoder = BrainEncoder(cfg, centroids=torch.randn(12, 3))
    with pytest.raises(InputError, match="centroid"):
        to_official({"encoder": encoder.state_dict()})
    with pytest.raises(InputError, match="unknown module"):
        to_official({"head": {}})
    with pytest.raises(InputError, match="no official name: head.weight"):
        to_official({"encoder": {"head.weight": torch.zeros(1)}})


def test_convert_and_export_official_cli(tmp_path):
    """Official layout -> brainjepa weights -> official layout, through the CLI."""
    from brainjepa.cli import main
    from brainjepa.models import ModelConfig, build_model
    from brainjepa.models.convert import to_official

    cfg = ModelConfig.from_dict({"size": "small", "depth": 2, "predictor_depth": 1, "n_rois": 10,
                                 "n_timesteps": 32, "n_gradients": 4}).resolved()
    gradients = torch.randn(10, 4)
    encoder, predictor = build_model(cfg, gradients)
    states = {"encoder": encoder.state_dict(), "predictor": predictor.state_dict(),
              "target_encoder": copy.deepcopy(encoder).state_dict()}
    official = to_official(states)
    torch.save({**official, "epoch": 3}, tmp_path / "official.pth")
    write_gradients(gradients.numpy(), np.ones(4), [f"r{i}" for i in range(10)], tmp_path / "g.tsv")
    assert main(["convert-checkpoint", "--official", str(tmp_path / "official.pth"), "--gradients",
                 str(tmp_path / "g.tsv"), "--out", str(tmp_path / "ours.pt")]) == 0
    loaded, model_config = load_weights(tmp_path / "ours.pt")
    assert model_config["embed_dim"] == 384 and model_config["depth"] == 2
    for module in MODULES:
        for key, value in states[module].items():
            torch.testing.assert_close(loaded[module][key], value, rtol=1e-5, atol=1e-6)
    assert main(["export-official", "--checkpoint", str(tmp_path / "ours.pt"), "--out",
                 str(tmp_path / "back.pth")]) == 0
    back = torch.load(tmp_path / "back.pth", weights_only=True)
    assert back.keys() == official.keys()
    for module in official:
        assert back[module].keys() == official[module].keys()


def with_sincos(ckpt: dict, rois: int, patches: int, prefix: str = "module.") -> dict:
    """The frozen time embeddings as the released file holds them (sin-cos of the time patch), not noise."""
    from brainjepa.models.pos_embed import sincos_1d

    for name, key in (("encoder", "pos_embed_proj.emb_h"), ("target_encoder", "pos_embed_proj.emb_h"),
                      ("predictor", "predictor_2dpe_proj.emb_h")):
        width = ckpt[name][prefix + key].shape[1]
        ckpt[name][prefix + key] = sincos_1d(width, torch.arange(patches).repeat(rois))
    return ckpt


def small_release(tmp_path, rois: int = 128, patches: int = 10, dim: int = 384, extra: dict | None = None):
    shapes = official_shapes(dim=dim, depth=1, pdim=dim // 2, pdepth=1, rois=rois, patches=patches, grads=4)
    path = tmp_path / "official.pth"
    torch.save(with_sincos(official_checkpoint(shapes), rois, patches) | (extra or {}), path)
    return path


def gradients_file(tmp_path, rois: int, name: str = "gradients.tsv"):
    rng = np.random.default_rng(0)
    write_gradients(rng.normal(size=(rois, 4)), np.linspace(1, 0.5, 4), [f"R{i}" for i in range(rois)],
                    tmp_path / name)
    return tmp_path / name


def test_a_checkpoint_of_other_rois_than_the_gradients_is_refused(tmp_path):
    """128 ROIs x 10 patches with 64-ROI gradients used to convert (rc 0) as 64 ROIs x 20 patches (320 steps)."""
    from brainjepa.models.convert import convert_official

    release = small_release(tmp_path)
    with pytest.raises(InputError, match=r"\['pos_embed_proj.emb_h'\] \(1280, 192\) is the time embedding of 128 "
                                         r"ROIs x 10 time patches, but the gradients have 64 ROIs"):
        convert_official(release, gradients_file(tmp_path, 64, "g64.tsv"), tmp_path / "w64.pt")
    assert not (tmp_path / "w64.pt").exists()
    cfg = convert_official(release, gradients_file(tmp_path, 128), tmp_path / "w.pt")
    assert (cfg.n_rois, cfg.n_timesteps) == (128, 160)
    states, _ = load_weights(tmp_path / "w.pt")
    assert states["target_encoder"]["pos_embed.temporal"].shape == (1280, 192)


def test_a_crafted_checkpoint_runs_nothing(tmp_path):
    """A pickle that calls os.system on load: convert-checkpoint used to run it (torch.load weights_only=False)."""
    import os

    from brainjepa.cli import main
    from brainjepa.models.convert import convert_official

    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    release = small_release(tmp_path, extra={"note": Payload()})
    with pytest.raises(InputError, match=r"official.pth: official checkpoint refused: it asks to run \S*system"):
        convert_official(release, gradients_file(tmp_path, 128), tmp_path / "w.pt")
    assert main(["convert-checkpoint", "--official", str(release), "--gradients", str(tmp_path / "gradients.tsv"),
                 "--out", str(tmp_path / "w.pt")]) == 1
    assert not marker.exists() and not (tmp_path / "w.pt").exists()
    torch.save({"format": "brainjepa-weights/1", "payload": Payload()}, tmp_path / "evil.pt")
    with pytest.raises(InputError, match="evil.pt: checkpoint refused"):  # every reader of a weights file
        load_weights(tmp_path / "evil.pt")
    assert not marker.exists()


def test_the_release_extras_numpy_scalars_load_as_data(tmp_path):
    from brainjepa.models.convert import convert_official

    extra = {"loss": np.float64(0.25), "lr": np.float32(1e-3), "batch_size": np.int64(16), "world_size": 4}
    release = small_release(tmp_path, rois=16, patches=10, extra=extra)
    cfg = convert_official(release, gradients_file(tmp_path, 16), tmp_path / "w.pt")
    assert cfg.n_rois == 16 and torch.load(tmp_path / "w.pt", weights_only=True)["format"] == "brainjepa-weights/1"


def test_a_width_without_a_preset_needs_its_heads(tmp_path):
    """A 64-wide model: the message used to point at `cfg=`, which the CLI does not have."""
    from brainjepa.cli import main
    from brainjepa.models.convert import convert_official

    release = small_release(tmp_path, rois=16, patches=10, dim=64)
    grads = gradients_file(tmp_path, 16)
    with pytest.raises(InputError, match=r"width 64 matches no preset .*convert-checkpoint --num-heads N"):
        convert_official(release, grads, tmp_path / "w.pt")
    out = tmp_path / "w.pt"
    args = ["convert-checkpoint", "--official", str(release), "--gradients", str(grads), "--out", str(out)]
    assert main(args + ["--num-heads", "2"]) == 0
    _, model_config = load_weights(tmp_path / "w.pt")
    assert (model_config["embed_dim"], model_config["num_heads"]) == (64, 2)


@pytest.mark.parametrize("content,match", [
    (b"", r"empty.pth: cannot read official checkpoint: the file is empty \(0 bytes\)"),
    (bytes(range(7, 250)) * 4, r"empty.pth: cannot read official checkpoint: not a PyTorch checkpoint, or corrupt "
                               r"\(972 bytes, starting 07 08 09 0a 0b 0c 0d 0e"),
    (b"PK\x03\x04" + b"\0" * 60, r"cannot read official checkpoint: a truncated or corrupt PyTorch file \(64 bytes; "
                                 r"RuntimeError: PytorchStreamReader failed reading zip archive"),
])
def test_an_empty_or_foreign_file_is_named_without_torch_advice(tmp_path, content, match):
    """An empty file said `cannot read official checkpoint ()`; random bytes repeated torch's advice to load with
    weights_only=False, which would run a crafted file's code."""
    from brainjepa.models.convert import convert_official

    (tmp_path / "empty.pth").write_bytes(content)
    with pytest.raises(InputError, match=match) as info:
        convert_official(tmp_path / "empty.pth", gradients_file(tmp_path, 16), tmp_path / "w.pt")
    assert "weights_only" not in str(info.value) and "miniz" not in str(info.value)


def test_a_converted_checkpoint_records_the_preset_it_matches_or_custom(tmp_path):
    """A 64-wide release converted with --num-heads 2 was recorded as size 'base'; the converted file must rebuild
    the model it holds."""
    from brainjepa.cli import main
    from brainjepa.models.convert import convert_official

    grads = gradients_file(tmp_path, 16)
    cfg = convert_official(small_release(tmp_path, rois=16, patches=10, dim=64), grads, tmp_path / "w.pt", 2)
    _, model_config = load_weights(tmp_path / "w.pt")
    assert cfg.size == model_config["size"] == "custom"
    rebuilt = ModelConfig.from_dict(model_config).resolved()
    assert (rebuilt.embed_dim, rebuilt.num_heads, rebuilt.depth, rebuilt.predictor_dim) == (64, 2, 1, 32)
    from brainjepa.evaluate.encoders import load_encoder

    encoder, _ = load_encoder({"kind": "checkpoint", "path": str(tmp_path / "w.pt")}, [f"R{i}" for i in range(16)],
                              160)
    assert encoder.cfg.num_heads == 2 and encoder.cfg.size == "custom"
    with pytest.raises(InputError, match=r"model.size 'custom' needs every size: embed_dim, depth"):
        ModelConfig(size="custom").resolved()
    # a tiny official checkpoint from export-official (a preset-width model) keeps its preset name
    tiny = ModelConfig(size="tiny", n_rois=16, n_timesteps=160, n_gradients=4).resolved()
    encoder, predictor = build_model(tiny, torch.randn(16, 4))
    states = {"encoder": encoder.state_dict(), "predictor": predictor.state_dict(),
              "target_encoder": encoder.state_dict()}
    from brainjepa.models.weights import save_weights

    save_weights(tmp_path / "tiny.pt", states, tiny.to_dict(), source="test")
    assert main(["export-official", "--checkpoint", str(tmp_path / "tiny.pt"), "--out", str(tmp_path / "o.pth")]) == 0
    back = convert_official(tmp_path / "o.pth", grads, tmp_path / "tiny_back.pt", 4)  # 96 wide: heads not inferred
    assert back.size == load_weights(tmp_path / "tiny_back.pt")[1]["size"] == "tiny"
