"""Fine-tuning: the whole encoder plus the mean-pool head, with layer-wise LR decay and drop path that apply.

Parameter groups follow MAE's ``param_groups_lrd``: every parameter gets a layer id (patch and positional
embedding 0, block i -> i + 1, final norm and head depth + 1) and the learning rate
``lr x layer_decay^(depth + 1 - id)``; biases, norms and other 1-D parameters have no weight decay. Drop
path: the encoder is rebuilt with ``drop_path`` (stochastic depth rising linearly over the blocks to that
rate), active in training mode only. The public code configures both and applies neither.
"""

from __future__ import annotations

import torch

from brainjepa.evaluate.config import FinetuneConfig


def layer_id(name: str, depth: int) -> int:
    """Layer of an encoder/head parameter name: embeddings 0, ``encoder.blocks.i.*`` i + 1, the rest depth + 1."""
    if name.startswith(("encoder.patch_embed", "encoder.pos_embed")):
        return 0
    if name.startswith("encoder.blocks."):
        return int(name.split(".")[2]) + 1
    return depth + 1


def param_groups_lrd(model: torch.nn.Module, weight_decay: float, layer_decay: float) -> list[dict]:
    """AdamW groups per (layer, decay or not), each with its ``lr_scale`` and ``layer`` (for tests and logs)."""
    depth = len(model.encoder.blocks)
    groups: dict[tuple[int, bool], dict] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        decay = param.ndim > 1 and not name.endswith(".bias")
        layer = layer_id(name, depth)
        key = (layer, decay)
        if key not in groups:
            groups[key] = {"params": [], "names": [], "layer": layer, "weight_decay": weight_decay if decay else 0.0,
                           "lr_scale": layer_decay ** (depth + 1 - layer)}
        groups[key]["params"].append(param)
        groups[key]["names"].append(name)
    return [groups[k] for k in sorted(groups)]


def build_finetune(encoder, n_outputs: int, cfg: FinetuneConfig, world_size: int):
    """The model and its AdamW optimizer; returns (model, optimizer, peak lr)."""
    from brainjepa.models.heads import FineTuneModel

    model = FineTuneModel(encoder, n_outputs)
    groups = param_groups_lrd(model, cfg.weight_decay, cfg.layer_decay)
    lr = cfg.base_lr * cfg.batch_size * world_size / 256
    optimizer = torch.optim.AdamW([{k: v for k, v in g.items() if k != "names"} for g in groups], lr=lr,
                                  betas=tuple(cfg.betas))
    return model, optimizer, lr

