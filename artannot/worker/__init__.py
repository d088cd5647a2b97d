"""ArtAnnot worker layer."""
