"""Figures and the report's tables: one module per figure family (group FC, gradients, QC, pretraining curves,
evaluation, network attention) and the report's run summary; :mod:`.common` holds what they share."""
