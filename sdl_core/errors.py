"""Exceptions that carry a message a user can act on.

Every error the library raises on bad input derives from :class:`SDLError`, so the
CLI and the demo can turn it into one line / one UI message without a traceback.
"""


class SDLError(Exception):
    """Base class: the message is meant for the end user."""


class ImageError(SDLError):
    """An image could not be read, or breaks a safety limit."""


class TagInputError(SDLError):
    """Typed tags are empty, too many, or too long."""


class WordSpaceError(SDLError):
    """A word space cannot be loaded or does not match the model."""


class VocabularyError(SDLError):
    """A vocabulary file is malformed."""


class CheckpointError(SDLError):
    """A checkpoint is missing, corrupt, unsafe, or does not match its config."""


class ModelNotFoundError(SDLError):
    """A model name is neither registered nor a readable checkpoint path."""


class XmpError(SDLError):
    """XMP keywords could not be written: a read-only folder, malformed existing XMP, ..."""


class SearchIndexError(SDLError):
    """A photo search index is missing, corrupt, or belongs to another model or folder."""


class StorageError(SDLError):
    """A file could not be written (disk full, read-only, no permission, or another
    process is writing it); nothing half-written is left behind."""


class DownloadError(SDLError):
    """A download failed, timed out, or did not deliver the expected file."""


class OfflineError(DownloadError):
    """A file is needed from the network, but downloads are switched off."""


class CacheError(StorageError):
    """The cache folder cannot be written (read-only, full disk): a download is not kept."""
