"""Project exceptions: every message is one line a curator can act on."""


class ArtAnnotError(Exception):
    """Base class for errors shown to the user as a one-line message."""


class ProjectError(ArtAnnotError):
    """The project file is missing, locked, corrupt or of an unknown version."""


class ImageLoadError(ArtAnnotError):
    """An image could not be read safely (corrupt, truncated, too large, unsupported)."""


class ImportFormatError(ArtAnnotError):
    """A label or annotation file is malformed or points outside its collection."""


class ModelError(ArtAnnotError):
    """A backbone or trained model is missing, incompatible or cannot be loaded."""


class Cancelled(ArtAnnotError):
    """A long job was cancelled by the user."""


class StorageError(ArtAnnotError, OSError):
    """A file could not be written (disk full, read-only); what was there before is intact."""


class DiskFullError(ProjectError, StorageError):
    """The disk holding the project (or a file being written) is full; what was saved before is intact."""
