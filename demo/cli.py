"""``python -m demo`` (and the Space's ``app.py``): start the app (offline, analytics off).

Exit codes: 0 after a normal stop; 2 when the model or the flags are unusable
(one line on stderr, no traceback); 130 on Ctrl-C while the model loads.

The page is served first and the startup model loads in the background: a name that
is not registered or a checkpoint with an unreadable header is refused before serving;
a model that fails to load later stops the server with the same one-line error.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import Mapping, Sequence

from sdl_core.cli.common import EXIT_INTERRUPTED, EXIT_USAGE, add_model_args


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port {port} is outside 0..65535")
    return port


def build_parser(env: Mapping[str, str] = os.environ) -> argparse.ArgumentParser:
    """Flags; GRADIO_SERVER_NAME / GRADIO_SERVER_PORT give the defaults of --host / --port."""
    parser = argparse.ArgumentParser(prog="python -m demo", description="Zero-shot image tagger web app (Gradio).")
    parser.add_argument("--host", default=env.get("GRADIO_SERVER_NAME") or "127.0.0.1",
                        help="address to listen on (default: $GRADIO_SERVER_NAME or 127.0.0.1; "
                             "0.0.0.0 serves the whole network)")
    parser.add_argument("--port", type=_port, default=env.get("GRADIO_SERVER_PORT") or "7860",
                        help="port (default: $GRADIO_SERVER_PORT or 7860)")
    add_model_args(parser, data_dir=False, device_help="torch device (default: cpu)",
                   model_help="registered model name or .safetensors checkpoint shown first (default: default)")
    parser.add_argument("--models-dir", default="models",
                        help="folder whose .safetensors checkpoints the model menu also offers (default: models)")
    parser.add_argument("--search-dir", action="extend", nargs="+", default=[], metavar="DIR",
                        help="photo folder(s) for the Search tab")
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    return parser


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] = os.environ) -> int:
    args = build_parser(env).parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from sdl_core.errors import SDLError  # gradio is imported after the flags are known to be fine

    from .app import build_app, launch
    missing = [d for d in args.search_dir if not Path(d).is_dir()]
    if missing:
        print(f"error: --search-dir {missing[0]}: no such folder", file=sys.stderr)
        return EXIT_USAGE
    try:
        app = build_app(args.model, args.models_dir, args.search_dir, device=args.device,
                        word_space=args.word_space)
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
    app.block_thread()
    return 0
