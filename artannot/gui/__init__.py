"""ArtAnnot gui layer."""
