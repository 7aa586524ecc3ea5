"""Training-side errors: bad datasets, splits and run folders (all :class:`SDLError`)."""
from sdl_core.errors import SDLError


class DataError(SDLError):
    """A dataset, annotation file, split or tag-vector table cannot be used."""


class RunError(SDLError):
    """A training run cannot start or resume (run folder, options, distributed setup)."""
