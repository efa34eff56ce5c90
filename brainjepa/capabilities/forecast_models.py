"""The trained forecasters of :mod:`.forecast` (torch modules; imported only by the jobs that train one, so that
the baselines without a network do not import torch)."""

from __future__ import annotations

import torch
from torch import nn

from brainjepa.models.layers import INIT_STD


class EncoderForecaster(nn.Module):
    """Encoder on the context patches + a per-ROI head. x [B, R, T'] (T' >= context; steps from ``context``
    on are never read) -> [B, R, horizon]."""

    def __init__(self, encoder: nn.Module, context: int, horizon: int) -> None:
        super().__init__()
        cfg = encoder.cfg
        self.encoder, self.context, self.horizon = encoder, context, horizon
        self.n_rois, self.window, self.n_context = cfg.n_rois, cfg.n_timesteps, context // cfg.patch_size
        idx = torch.arange(cfg.n_rois)[:, None] * cfg.n_time_patches + torch.arange(self.n_context)[None, :]
        self.register_buffer("token_idx", idx.reshape(1, -1), persistent=False)   # [1, R * Wc], ROI-major
        width = self.n_context * encoder.embed_dim
        self.norm = nn.LayerNorm(width, eps=1e-6)
        self.fc = nn.Linear(width, horizon)
        nn.init.trunc_normal_(self.fc.weight, std=INIT_STD)
        nn.init.zeros_(self.fc.bias)

    def encoder_input(self, x):
        """x [B, R, T'] -> [B, 1, R, window]: the context, zeros from step ``context`` on."""
        full = x.new_zeros(x.shape[0], 1, self.n_rois, self.window)
        full[:, 0, :, :self.context] = x[:, :, :self.context]
        return full

    def forward(self, x):
        b = x.shape[0]
        tokens = self.encoder(self.encoder_input(x), self.token_idx.expand(b, -1))   # [B, R * Wc, D]
        return self.fc(self.norm(tokens.reshape(b, self.n_rois, -1)))


class LSTMForecaster(nn.Module):
    """Multivariate LSTM over the ROIs, one step ahead, iterated. x [B, R, T'] -> [B, R, horizon]: the LSTM
    reads the context, a linear map of its hidden state predicts the next step of every ROI, and each
    prediction is fed back as the next input. Trained by :meth:`one_step_loss` (teacher forcing)."""

    def __init__(self, n_rois: int, context: int, horizon: int, hidden: int, layers: int) -> None:
        super().__init__()
        self.n_rois, self.context, self.horizon = n_rois, context, horizon
        self.lstm = nn.LSTM(n_rois, hidden, layers, batch_first=True)
        self.fc = nn.Linear(hidden, n_rois)
        nn.init.trunc_normal_(self.fc.weight, std=INIT_STD)
        nn.init.zeros_(self.fc.bias)

    def one_step_loss(self, x):
        """MSE of the next-step predictions at every step of the stretches x [B, R, S]."""
        seq = x.transpose(1, 2)                                                 # [B, S, R]
        out, _ = self.lstm(seq[:, :-1])
        return torch.nn.functional.mse_loss(self.fc(out).float(), seq[:, 1:].float())

    def forward(self, x):
        out, state = self.lstm(x[:, :, :self.context].transpose(1, 2))         # [B, C, hidden]
        step = self.fc(out[:, -1:])                                             # [B, 1, R]
        steps = [step]
        for _ in range(self.horizon - 1):
            out, state = self.lstm(step, state)
            step = self.fc(out)
            steps.append(step)
        return torch.cat(steps, dim=1).transpose(1, 2)                          # [B, R, H]
