"""Downstream evaluation: tasks, fine-tuning, probes, baselines, metrics and their tables."""
