"""ArtAnnot data layer."""
