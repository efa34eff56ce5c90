"""Self-supervised Brain-JEPA pretraining: typed config, pure schedules, EMA, the training loop, checkpoints."""
