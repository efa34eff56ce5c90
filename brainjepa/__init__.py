"""brainjepa: from preprocessed fMRI to a trained Brain-JEPA foundation model.

    import brainjepa
    encoder = brainjepa.load_model("results/models/brainjepa_tiny")   # a model bundle (docs/models.md)

Names beyond ``__version__`` are imported on first use: ``import brainjepa`` imports neither torch nor numpy.
"""

__version__ = "0.1.0"  # the one place the version is written (pyproject.toml reads it); changes: CHANGELOG.md

_LAZY = {"load_model": "brainjepa.models.bundle", "load_bundle": "brainjepa.models.bundle",
         "read_bundle": "brainjepa.models.bundle"}
__all__ = ["__version__", *_LAZY]


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'brainjepa' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(_LAZY[name]), name)
