"""Figures: one module per figure family (group FC heatmap, ...)."""
