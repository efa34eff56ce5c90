"""Convert between the public Brain-JEPA checkpoint layout and our module state dicts.

The official checkpoint (``torch.save`` of a dict) holds ``encoder``, ``predictor`` and
``target_encoder`` state dicts whose keys carry the DDP prefix ``module.`` (plus ``opt``, ``scaler``,
``epoch``, ..., ignored here). Downstream code, MedARC's Brainmarks included, reads
``["target_encoder"]``, strips ``module.`` and refuses missing or unexpected keys.

The official model reads the gradients from a CSV, so its state dicts have no gradient tensor; ours
keep them as a buffer (``pos_embed.gradients``), filled from the ``gradients`` argument on import and
dropped on export. Official ``add_w="origin"`` models (a sin-cos of the ROI index, ``emb_w``) map to
our ``positional="roi_sincos"``; ``positional="centroid"`` has no official counterpart.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from brainjepa.errors import InputError
from brainjepa.models.build import build_model
from brainjepa.models.config import PRESETS, ModelConfig

DDP_PREFIX = "module."
MODULES = ("encoder", "predictor", "target_encoder")

# The whole mapping, official name -> ours, in one place. An entry ending in "." renames a prefix,
# any other entry renames one exact key. The target encoder uses the encoder's table.
ENCODER_KEYS: tuple[tuple[str, str], ...] = (
    ("patch_embed.proj.", "patch_embed.proj."),                          # Conv2d [D, 1, 1, p]
    ("pos_embed_proj.emb_h", "pos_embed.temporal"),                      # frozen sin-cos [R*W, D/2]
    ("pos_embed_proj.emb_w", "pos_embed.spatial"),                       # "origin": sin-cos of the ROI
    ("pos_embed_proj.predictor_pos_embed_proj.", "pos_embed.spatial_proj."),  # Linear(G, D/2)
    ("blocks.", "blocks."),                                              # norm1, attn.qkv, attn.proj, ...
    ("norm.", "norm."),
)
PREDICTOR_KEYS: tuple[tuple[str, str], ...] = (
    ("mask_token", "mask_token"),                                        # [1, 1, Dp]
    ("predictor_embed.", "embed."),                                      # Linear(D, Dp)
    ("predictor_2dpe_proj.emb_h", "pos_embed.temporal"),                 # frozen sin-cos [R*W, Dp/2]
    ("predictor_2dpe_proj.emb_w", "pos_embed.spatial"),
    ("predictor_2dpe_proj.predictor_pos_embed_proj.", "pos_embed.spatial_proj."),  # Linear(G, Dp/2)
    ("predictor_blocks.", "blocks."),
    ("predictor_norm.", "norm."),
    ("predictor_proj.", "proj."),                                        # Linear(Dp, D)
)
TABLES = {"encoder": ENCODER_KEYS, "target_encoder": ENCODER_KEYS, "predictor": PREDICTOR_KEYS}
# Our buffers with no official key: filled from the converter's argument, dropped on export.
OWN_ONLY = ("pos_embed.gradients", "pos_embed.centroids")
SIZE_BY_WIDTH = {PRESETS[s]["embed_dim"]: s for s in ("small", "base", "large")}


def _rename(key: str, table: tuple[tuple[str, str], ...], reverse: bool = False) -> str | None:
    """Apply the first matching entry of ``table`` (ours -> official when ``reverse``); None if none."""
    for official, ours in table:
        src, dst = (ours, official) if reverse else (official, ours)
        if src.endswith(".") and key.startswith(src):
            return dst + key[len(src):]
        if key == src:
            return dst
    return None


def _listing(keys: list[str], limit: int = 40) -> str:
    keys = sorted(keys)
    more = f", ... and {len(keys) - limit} more" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


def strip_ddp_prefix(state: Mapping[str, Any]) -> dict[str, Any]:
    """Remove a leading ``module.`` from every key that has one."""
    return {k[len(DDP_PREFIX):] if k.startswith(DDP_PREFIX) else k: v for k, v in state.items()}


def _official_states(checkpoint: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The module state dicts of an official checkpoint, ``module.`` stripped."""
    present = [name for name in MODULES if name in checkpoint]
    if not present:
        raise InputError(f"not a Brain-JEPA checkpoint: none of {', '.join(MODULES)} among its top-level "
                         f"keys ({_listing([str(k) for k in checkpoint])})")
    states = {}
    for name in present:
        if not isinstance(checkpoint[name], Mapping):
            raise InputError(f"checkpoint[{name!r}] is a {type(checkpoint[name]).__name__}, not a state dict")
        states[name] = strip_ddp_prefix(checkpoint[name])
    return states


def _block_count(state: Mapping[str, Any], prefix: str) -> int:
    indices = [int(m.group(1)) for k in state if (m := re.match(re.escape(prefix) + r"(\d+)\.", k))]
    return max(indices) + 1 if indices else 0


def _need(state: Mapping[str, Any], key: str, module: str) -> Tensor:
    if key not in state:
        raise InputError(f"cannot infer the model config: checkpoint[{module!r}] has no {key!r}")
    return state[key]


def _sincos_layout(temporal: Tensor) -> tuple[int, int] | None:
    """(ROIs, time patches) of a frozen temporal table (token ``roi * W + t`` holds sincos(t)): W is the first row
    after row 0 that repeats it. None when the table is not that sin-cos (or is a shape-only meta tensor)."""
    from brainjepa.models.pos_embed import sincos_1d

    if temporal.is_meta or temporal.ndim != 2 or not len(temporal) or temporal.shape[1] % 2:
        return None
    table = temporal.detach().float().cpu()
    same = torch.isclose(table, table[:1], atol=1e-5).all(dim=1)
    same[0] = False
    hits = torch.nonzero(same).flatten()
    n_patches = int(hits[0]) if len(hits) else len(table)
    if len(table) % n_patches:
        return None
    n_rois = len(table) // n_patches
    expected = sincos_1d(table.shape[1], torch.arange(n_patches).repeat(n_rois))
    return (n_rois, n_patches) if torch.allclose(table, expected, atol=1e-4) else None


def config_from_official(checkpoint: Mapping[str, Any], n_rois: int, num_heads: int | None = None) -> ModelConfig:
    """Infer our (resolved) ModelConfig from an official checkpoint's shapes; heads come from the width's preset
    (``num_heads`` for other widths). The ROI count comes from the gradients (``n_rois``) and is checked against
    the checkpoint's frozen time embedding, whose period is its number of time patches."""
    states = _official_states(checkpoint)
    name = "target_encoder" if "target_encoder" in states else "encoder" if "encoder" in states else None
    if name is None:
        raise InputError("cannot infer the model config from a checkpoint without an encoder or target_encoder")
    enc = states[name]
    patch = _need(enc, "patch_embed.proj.weight", name)
    dim, patch_size = int(patch.shape[0]), int(patch.shape[-1])
    if dim not in SIZE_BY_WIDTH and num_heads is None:
        raise InputError(f"encoder width {dim} matches no preset (384, 768, 1024), so the number of attention "
                         "heads is unknown: give it (convert-checkpoint --num-heads N)")
    temporal = _need(enc, "pos_embed_proj.emb_h", name)
    n_tokens = int(temporal.shape[0])
    if n_tokens % n_rois:
        raise InputError(f"checkpoint[{name!r}] has {n_tokens} tokens (pos_embed_proj.emb_h "
                         f"{tuple(temporal.shape)}), not a multiple of the gradients' {n_rois} ROIs")
    layout = _sincos_layout(temporal)
    if layout is not None and layout[0] != n_rois:
        raise InputError(f"checkpoint[{name!r}]['pos_embed_proj.emb_h'] {tuple(temporal.shape)} is the time "
                         f"embedding of {layout[0]} ROIs x {layout[1]} time patches, but the gradients have "
                         f"{n_rois} ROIs (as {n_tokens // n_rois} time patches): give the gradients the model "
                         "was trained with")
    fields: dict[str, Any] = {
        "n_rois": n_rois, "n_timesteps": n_tokens // n_rois * patch_size,
        "patch_size": patch_size, "embed_dim": dim, "depth": _block_count(enc, "blocks."),
        "num_heads": num_heads if num_heads is not None else PRESETS[SIZE_BY_WIDTH[dim]]["num_heads"],
        "mlp_ratio": _need(enc, "blocks.0.mlp.fc1.weight", name).shape[0] / dim,
        "qkv_bias": "blocks.0.attn.qkv.bias" in enc}
    if "pos_embed_proj.predictor_pos_embed_proj.weight" in enc:
        fields.update(positional="gradient", n_gradients=int(enc["pos_embed_proj.predictor_pos_embed_proj.weight"]
                                                              .shape[1]))
    elif "pos_embed_proj.emb_w" in enc:
        fields.update(positional="roi_sincos")
    else:
        raise InputError(f"checkpoint[{name!r}] has neither a gradient projection "
                         "(pos_embed_proj.predictor_pos_embed_proj.*) nor pos_embed_proj.emb_w")
    if "predictor" in states:
        pred = states["predictor"]
        fields.update(predictor_dim=int(_need(pred, "predictor_embed.weight", "predictor").shape[0]),
                      predictor_depth=_block_count(pred, "predictor_blocks."))
    fields["size"] = _matching_preset(fields)
    if fields["size"] == "custom" and "predictor" not in states:  # no predictor to measure: a placeholder
        fields.update(predictor_dim=dim, predictor_depth=0)
    return ModelConfig(**fields).resolved()


def _matching_preset(fields: Mapping[str, Any]) -> str:
    """The preset whose sizes all equal ``fields``' (those present), else "custom": what the checkpoint is."""
    for size, preset in PRESETS.items():
        if all(fields.get(k, v) == v for k, v in preset.items()):
            return size
    return "custom"


def _expected(cfg: ModelConfig, gradients: Tensor | None) -> dict[str, dict[str, tuple[int, ...]]]:
    """Our key -> shape for each module of ``cfg`` (built on the meta device)."""
    grads = None if gradients is None else torch.empty(tuple(gradients.shape), device="meta")
    with torch.device("meta"):
        encoder, predictor = build_model(cfg, grads)
    shapes = {name: {k: tuple(v.shape) for k, v in m.state_dict().items()}
              for name, m in (("encoder", encoder), ("predictor", predictor))}
    shapes["target_encoder"] = shapes["encoder"]
    return shapes


def from_official(checkpoint: Mapping[str, Any], gradients: Tensor | None = None,
                  cfg: ModelConfig | None = None) -> dict[str, dict[str, Tensor]]:
    """Official checkpoint -> {"encoder", "predictor", "target_encoder"} state dicts of our modules.

    Args:
        checkpoint: the loaded official checkpoint (``module.`` prefixes optional). Modules absent
            from it are absent from the result.
        gradients: [R, G] gradients the checkpoint was trained with (its gradient CSV); required for
            gradient positioning, stored as each module's ``pos_embed.gradients``.
        cfg: our model config; inferred from the shapes when None.

    Raises InputError listing every unknown key, missing key and shape mismatch (official names).
    """
    states = _official_states(checkpoint)
    gradients = None if gradients is None else torch.as_tensor(gradients, dtype=torch.float32)
    if cfg is None:
        if gradients is None:
            raise InputError("from_official: pass the checkpoint's gradients [R, G] (they also give n_rois), "
                             "or cfg= for a model without gradient positioning")
        cfg = config_from_official(checkpoint, int(gradients.shape[0]))
    cfg = cfg.resolved()
    if cfg.positional == "centroid":
        raise InputError("positional='centroid' has no official checkpoint layout")
    if cfg.positional == "gradient" and gradients is None:
        raise InputError("from_official: this model uses gradient positioning: pass its gradients [R, G]")
    expected = _expected(cfg, gradients)
    problems, out = [], {}
    for name, state in states.items():
        ours, unknown = {}, []
        for key, value in state.items():
            new = _rename(key, TABLES[name])
            if new is None:
                unknown.append(key)
            else:
                ours[new] = value
        if cfg.positional == "gradient":
            ours["pos_embed.gradients"] = gradients
        problems += _compare(name, ours, expected[name], unknown)
        out[name] = ours
    if problems:
        raise InputError("official checkpoint does not match the model "
                         f"(size {cfg.size}, depth {cfg.depth}, predictor depth {cfg.predictor_depth}):\n  "
                         + "\n  ".join(problems))
    return out


def _compare(name: str, ours: Mapping[str, Any], expected: Mapping[str, tuple[int, ...]],
             unknown: list[str]) -> list[str]:
    """Problems of one converted state dict, in official key names."""
    table = TABLES[name]
    official = {k: _rename(k, table, reverse=True) or k for k in expected}
    missing = [official[k] for k in expected if k not in ours]
    unknown = unknown + [_rename(k, table, reverse=True) or k for k in ours if k not in expected]
    shapes = [f"{official[k]}: {tuple(v.shape)} (expected {expected[k]})" for k, v in ours.items()
              if k in expected and isinstance(v, Tensor) and tuple(v.shape) != expected[k]]
    not_tensors = [k for k, v in ours.items() if not isinstance(v, Tensor)]
    problems = []
    for label, keys in (("missing keys", missing), ("unexpected keys", unknown),
                        ("shape mismatches", shapes), ("non-tensor values", not_tensors)):
        if keys:
            problems.append(f"{name}: {label}: {_listing(keys)}")
    return problems


def _plain(value: Tensor) -> Tensor:
    """A detached, contiguous CPU copy (meta tensors, used for shape-only dry runs, stay meta)."""
    value = value.detach()
    return value if value.is_meta else value.to("cpu", copy=True).contiguous()


def to_official(states: Mapping[str, Mapping[str, Tensor]]) -> dict[str, dict[str, Tensor]]:
    """Our state dicts -> the official layout: ``module.``-prefixed keys, plain CPU tensors only.

    ``states`` maps any of "encoder", "predictor", "target_encoder" to a state dict of our module.
    The result loads with ``torch.load(weights_only=True)`` after ``torch.save``, and its
    ``target_encoder`` holds exactly the keys the official encoder (and Brainmarks) expects.
    """
    unknown_modules = sorted(set(states) - set(MODULES))
    if unknown_modules:
        raise InputError(f"to_official: unknown module(s) {', '.join(unknown_modules)} "
                         f"(expected {', '.join(MODULES)})")
    out: dict[str, dict[str, Tensor]] = {}
    for name, state in states.items():
        if "pos_embed.centroids" in state:
            raise InputError("positional='centroid' has no official checkpoint layout")
        converted, unknown = {}, []
        for key, value in state.items():
            if key in OWN_ONLY:
                continue
            new = _rename(key, TABLES[name], reverse=True)
            if new is None:
                unknown.append(key)
            else:
                converted[DDP_PREFIX + new] = _plain(value)
        if unknown:
            raise InputError(f"to_official: {name} has keys with no official name: {_listing(unknown)}")
        out[name] = converted
    return out


def convert_official(official_path: str | Path, gradients_path: str | Path, out: str | Path,
                     num_heads: int | None = None) -> ModelConfig:
    """``convert-checkpoint``: the released Brain-JEPA ``.pth`` -> a brainjepa weights file.

    The file is read as data (``weights_only``, numpy scalars allow-listed: the release's extra entries), so a
    crafted file cannot run code; its layout is checked against the gradients (ROIs and gradient count).
    """
    from brainjepa.group.gradients import read_gradients
    from brainjepa.models.weights import read_torch_file, save_weights

    official = read_torch_file(official_path, "official checkpoint")
    _, gradients = read_gradients(gradients_path)
    cfg = config_from_official(official, gradients.shape[0], num_heads)
    states = from_official(official, torch.tensor(gradients, dtype=torch.float32), cfg)
    save_weights(out, states, cfg.to_dict(), source=str(official_path))
    return cfg


def export_official(checkpoint_path: str | Path, out: str | Path) -> None:
    """``export-official``: a brainjepa checkpoint or weights file -> the official key layout (``.pth``)."""
    from brainjepa.io import atomic_path
    from brainjepa.models.weights import load_weights

    states, _ = load_weights(checkpoint_path)
    with atomic_path(out) as tmp:
        torch.save(to_official(states), tmp)
