"""One rule for errors in every event of the app: bad input gets sdl_core's message,
anything else a generic one (and a logged traceback). The server keeps serving."""
from __future__ import annotations

import functools
import html
import logging
import re
from typing import Any, Callable

import gradio as gr

from sdl_core import SDLError

log = logging.getLogger(__name__)

#: The folders of an absolute path ("/tmp/gradio/3fa9.../"): dropped from messages so the page
#: never shows the server's folders (the file name stays, so the user knows which file).
_FOLDERS = re.compile(r"(?<![\w.~:/])/(?:[^\s/'\"<>]+/)+")

GENERIC_ERROR = ("Something went wrong on the server while handling this request (it has been logged). "
                 "Please try again, or try another photo.")


def user_errors(fn: Callable) -> Callable:
    """Wrap an event handler so no traceback ever reaches the page."""
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except gr.Error:
            raise
        except SDLError as exc:
            # Gradio renders error text as (sanitised) HTML; user text in it must stay text
            raise gr.Error(html.escape(without_folders(str(exc))), print_exception=False) from None
        except Exception:  # noqa: BLE001 - the page must get a message, the log the traceback
            log.exception("unexpected error in %s", getattr(fn, "__qualname__", fn))
            raise gr.Error(GENERIC_ERROR, print_exception=False) from None
    return wrapper


def without_folders(text: str) -> str:
    """``text`` with the folder part of every absolute path removed."""
    return _FOLDERS.sub("", text)
