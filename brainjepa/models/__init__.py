"""Brain-JEPA models: the encoder (context and target), the predictor, their config, weights and converters.

    from brainjepa.models import ModelConfig, build_model
    encoder, predictor = build_model(ModelConfig(size="base"), gradients)  # gradients: [450, 30]
    tokens = encoder(x)                                                    # x: [B, 1, 450, 160]

Names are imported on first use, so reading a config (``brainjepa.models.config``) does not import torch:
the command line and the workflow's parse stay fast.
"""

from __future__ import annotations

import importlib

_WHERE = {
    "build_model": "build", "count_parameters": "build", "model_info": "build",
    "PRESETS": "config", "ModelConfig": "config",
    "BrainEncoder": "encoder", "PatchEmbed": "encoder",
    "gather_tokens": "layers", "key_padding_mask": "layers", "set_attention_backend": "layers",
    "BrainPositionalEmbedding": "pos_embed", "sincos_1d": "pos_embed",
    "BrainPredictor": "predictor",
    "AttentiveProbe": "heads", "FineTuneModel": "heads", "LinearProbe": "heads", "MeanPoolHead": "heads",
}
__all__ = sorted(_WHERE)


def __getattr__(name: str):
    if name not in _WHERE:
        raise AttributeError(f"module 'brainjepa.models' has no attribute {name!r}")
    return getattr(importlib.import_module(f"brainjepa.models.{_WHERE[name]}"), name)
