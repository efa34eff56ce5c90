"""Pooled statistics of the pretraining set: splits, scaling statistics, group FC, gradients (rules/group.smk)."""
