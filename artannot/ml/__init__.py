"""ArtAnnot ml layer."""
