"""Brain-JEPA models: the encoder (context and target), the predictor, their config and converters.

    from brainjepa.models import ModelConfig, build_model
    encoder, predictor = build_model(ModelConfig(size="base"), gradients)  # gradients: [450, 30]
    tokens = encoder(x)                                                    # x: [B, 1, 450, 160]
"""

from brainjepa.models.build import build_model, count_parameters, model_info
from brainjepa.models.config import PRESETS, ModelConfig
from brainjepa.models.encoder import BrainEncoder, PatchEmbed
from brainjepa.models.layers import gather_tokens, key_padding_mask
from brainjepa.models.pos_embed import BrainPositionalEmbedding, sincos_1d
from brainjepa.models.predictor import BrainPredictor

__all__ = [
    "PRESETS", "BrainEncoder", "BrainPositionalEmbedding", "BrainPredictor", "ModelConfig", "PatchEmbed",
    "build_model", "count_parameters", "gather_tokens", "key_padding_mask", "model_info", "sincos_1d",
]
