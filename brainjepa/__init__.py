"""brainjepa: from preprocessed fMRI to a trained Brain-JEPA foundation model."""

__version__ = "0.1.0"
