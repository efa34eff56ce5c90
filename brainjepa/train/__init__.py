"""Self-supervised pretraining: typed config, masks, the JEPA objective, schedules, EMA, the loop, checkpoints."""
