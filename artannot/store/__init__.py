"""ArtAnnot store layer."""
