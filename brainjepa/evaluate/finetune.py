"""Fine-tuning: the whole encoder plus the mean-pool head, with layer-wise LR decay and drop path that apply.

Parameter groups follow MAE's ``param_groups_lrd``: every parameter gets a layer id (patch and positional
embedding 0, block i -> i + 1, final norm and head depth + 1) and the learning rate
``lr x layer_decay^(depth + 1 - id)``; biases, norms and other 1-D parameters have no weight decay. Drop
path: the encoder is rebuilt with ``drop_path`` (stochastic depth rising linearly over the blocks to that
rate), active in training mode only. The public code configures both and applies neither.

LP-FT (Kumar et al., ICLR 2022; ``finetune.head_init: probe``): before fine-tuning, the linear probe procedure
(:func:`brainjepa.evaluate.loop.fit_probe` with the ``linprobe`` settings) is fitted on the frozen encoder's
features as the head reads them (mean-pooled tokens, LayerNorm without affine) and copied into the head
(:meth:`brainjepa.models.heads.MeanPoolHead.load_probe`); fine-tuning then starts from a head that already
predicts, so the first steps do not distort the pretrained features through a random head.
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


@torch.no_grad()
def head_features(model, windows: torch.Tensor, device: torch.device, autocast, batch_size: int = 64) -> torch.Tensor:
    """The fine-tuning head's input at initialisation: windows [N, 1, R, T] -> the frozen encoder's tokens
    (evaluation mode: no drop path) mean-pooled and LayerNorm-ed without affine, [N, D] float32 on the CPU."""
    import torch.nn.functional as F

    training = model.training
    model.eval()
    out = []
    for i in range(0, len(windows), batch_size):
        with autocast():
            pooled = model.encoder(windows[i:i + batch_size].to(device).float()).float().mean(dim=1)
        out.append(F.layer_norm(pooled, pooled.shape[-1:], eps=model.head.norm.eps).cpu())
    model.train(training)
    return torch.cat(out)


def probe_head(model, train: tuple[torch.Tensor, torch.Tensor], val: tuple[torch.Tensor, object, object], kind: str,
               n_outputs: int, probe_cfg, *, seed: int, device: torch.device, autocast, rank: int = 0, name: str = "",
               class_weight=None) -> dict:
    """LP-FT's first stage: fit the linear probe (``probe_cfg``: a LinprobeConfig) on :func:`head_features` of the
    training windows, selected on the validation windows, and load it into ``model.head``.

    train: (windows [N, 1, R, T], targets [N]); val: (windows [M, 1, R, T], targets [M], subjects [M]). Every
    process fits the same probe (all windows, one process's steps). Returns the probe's selection info."""
    from brainjepa.evaluate.loop import fit_probe

    x_train = head_features(model, train[0], device, autocast)
    x_val = head_features(model, val[0], device, autocast)
    fitted = fit_probe("linprobe", probe_cfg, (x_train, train[1]), (x_val, val[1], val[2]), kind, n_outputs,
                       seed=seed, device=device, autocast=autocast, rank=rank, name=f"{name} probe",
                       class_weight=class_weight)
    model.head.load_probe(fitted.model.cpu())
    model.to(device)
    return fitted.info


def build_finetune(encoder, n_outputs: int, cfg: FinetuneConfig, world_size: int):
    """The model and its AdamW optimizer; returns (model, optimizer, peak lr)."""
    from brainjepa.models.heads import FineTuneModel

    model = FineTuneModel(encoder, n_outputs)
    groups = param_groups_lrd(model, cfg.weight_decay, cfg.layer_decay)
    lr = cfg.base_lr * cfg.batch_size * world_size / 256
    optimizer = torch.optim.AdamW([{k: v for k, v in g.items() if k != "names"} for g in groups], lr=lr,
                                  betas=tuple(cfg.betas))
    return model, optimizer, lr

