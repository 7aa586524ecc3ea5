"""``python -m demo`` (and the Space's ``app.py``): start the app (offline, analytics off).

Exit codes: 0 after a normal stop; 2 when the model or the flags are unusable
(one line on stderr, no traceback); 130 on Ctrl-C while the model loads.

The page is served first and the startup model loads in the background: a name that
is not registered or a checkpoint with an unreadable header is refused before serving;
a model that fails to load later stops the server with the same one-line error.

Deployments (a Hugging Face Space) choose the startup model with ``SDL_TAGGER_MODEL``
(``--model`` wins). A downloaded startup model that cannot be fetched, or an
``SDL_TAGGER_MODEL`` that names nothing usable, never leaves a blank page: the app serves
the offline default model and the page says why.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import Callable, Mapping, Sequence

from sdl_core.cli.common import EXIT_INTERRUPTED, EXIT_USAGE, add_model_args
from sdl_core.registry import DEFAULT_MODEL

from .cache import CACHE_MAX_AGE_S
from .memory import cap_malloc_arenas, start_trimmer

log = logging.getLogger(__name__)

#: The startup model of a deployment, when ``--model`` is not given.
ENV_MODEL = "SDL_TAGGER_MODEL"

def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port {port} is outside 0..65535")
    return port


def _seconds(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number of seconds: {text!r}") from None
    if value < 10:
        raise argparse.ArgumentTypeError(f"--cache-max-age must be at least 10 seconds, got {value}")
    return value


def build_parser(env: Mapping[str, str] = os.environ) -> argparse.ArgumentParser:
    """Flags; GRADIO_SERVER_NAME / GRADIO_SERVER_PORT / SDL_TAGGER_MODEL give the defaults of
    --host / --port / --model."""
    parser = argparse.ArgumentParser(prog="python -m demo", description="Zero-shot image tagger web app (Gradio).")
    parser.add_argument("--host", default=env.get("GRADIO_SERVER_NAME") or "127.0.0.1",
                        help="address to listen on (default: $GRADIO_SERVER_NAME or 127.0.0.1; "
                             "0.0.0.0 serves the whole network)")
    parser.add_argument("--port", type=_port, default=env.get("GRADIO_SERVER_PORT") or "7860",
                        help="port (default: $GRADIO_SERVER_PORT or 7860)")
    add_model_args(parser, data_dir=False, device_help="torch device (default: cpu)",
                   model_help="registered or pretrained model name (sdl_tresnet_m.nus_wide: downloaded once), "
                              f"hf-hub:OWNER/REPO, or .safetensors checkpoint shown first (default: ${ENV_MODEL} "
                              f"or {DEFAULT_MODEL})")
    parser.set_defaults(model=env.get(ENV_MODEL) or DEFAULT_MODEL)
    parser.add_argument("--models-dir", default="models",
                        help="folder whose .safetensors checkpoints the model menu also offers (default: models)")
    parser.add_argument("--search-dir", action="extend", nargs="+", default=[], metavar="DIR",
                        help="photo folder(s) for the Search tab")
    parser.add_argument("--cache-max-age", type=_seconds, default=CACHE_MAX_AGE_S, metavar="SECONDS",
                        help="delete uploads and results from the server's temporary folder once this old "
                             f"(default: {CACHE_MAX_AGE_S})")
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    return parser


def _build(build_app: Callable, args: argparse.Namespace, env: Mapping[str, str]):
    """The app for ``--model``, else ``$SDL_TAGGER_MODEL``, else the default. An
    ``SDL_TAGGER_MODEL`` that names nothing usable gives the default and a notice on the page
    (a deployment's page must come up); a bad ``--model`` is the user's to fix (SDLError)."""
    from sdl_core.errors import SDLError
    model, from_env = args.model, bool(env.get(ENV_MODEL)) and args.model == env.get(ENV_MODEL)
    options = dict(models_dir=args.models_dir, search_dirs=args.search_dir, device=args.device,
                   word_space=args.word_space, cache_max_age_s=args.cache_max_age)
    try:
        return build_app(model, **options)
    except SDLError as exc:
        if not from_env:
            raise
        log.warning("%s=%s cannot be used (%s); serving %s instead", ENV_MODEL, model, exc, DEFAULT_MODEL)
        app = build_app(DEFAULT_MODEL, **options)
        app.tagger_cache.notice = (f"{ENV_MODEL}={model} cannot be used ({exc}), so this page runs the offline "
                                   f"default model {DEFAULT_MODEL} instead.")
        return app


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] = os.environ) -> int:
    args = build_parser(env).parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    cap_malloc_arenas()  # before gradio and torch start their threads
    from sdl_core.errors import SDLError  # gradio is imported after the flags are known to be fine

    from .app import build_app, launch
    missing = [d for d in args.search_dir if not Path(d).is_dir()]
    if missing:
        print(f"error: --search-dir {missing[0]}: no such folder", file=sys.stderr)
        return EXIT_USAGE
    try:
        app = _build(build_app, args, env)
    except SDLError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    launch(app, host=args.host, port=args.port, prevent_thread_lock=True)
    try:
        app.tagger_cache.startup.result()  # the page is up meanwhile; requests wait for this load
    except SDLError as exc:
        app.close()
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        app.close()
        return EXIT_INTERRUPTED
    start_trimmer()
    app.block_thread()
    return 0
