"""Per-run stages: the combined atlas, parcellation, TR alignment (rules atlas, parcellate, align_tr)."""
