"""ArtAnnot: curate noisy-labelled art collections and train models on them, offline."""

__version__ = "0.1.0"
