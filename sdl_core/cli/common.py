"""What every command line of the project shares: exit codes, the error contract, model flags."""
from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Callable

from ..errors import SDLError
from ..registry import DEFAULT_MODEL

if TYPE_CHECKING:
    from ..tagger import Tagger

EXIT_OK, EXIT_SOME_FAILED, EXIT_USAGE = 0, 1, 2
EXIT_INTERRUPTED = 130

MODEL_HELP = ("registered or pretrained model name (sdl_tresnet_m.nus_wide: downloaded once, then cached), "
              "hf-hub:OWNER/REPO, our .safetensors checkpoint, or the authors' .pth (with --data-dir); "
              f"default: {DEFAULT_MODEL}")
WORD_SPACE_HELP = ("'wordllama', or the fastText .bin/.vec the model was trained with "
                   "(lets typed tags outside the vocabulary be embedded)")


def add_model_args(parser: argparse.ArgumentParser, *, data_dir: bool = True, model_help: str = MODEL_HELP,
                   device_help: str = "torch device, e.g. cpu, cuda, cuda:1, mps") -> None:
    """``--model``, ``--data-dir`` (unless ``data_dir=False``), ``--word-space`` and ``--device``."""
    parser.add_argument("--model", default=DEFAULT_MODEL, help=model_help)
    if data_dir:
        parser.add_argument("--data-dir", help="the authors' data folder, for their .pth checkpoint")
    parser.add_argument("--word-space", help=WORD_SPACE_HELP)
    parser.add_argument("--device", default="cpu", help=device_help)


def load_tagger(args: argparse.Namespace) -> Tagger:
    """The Tagger the model flags name (torch and timm load here, not at start-up; timm
    without torchvision's model zoo, see :mod:`sdl_core.fast_import`)."""
    from ..fast_import import import_timm
    import_timm()
    from ..tagger import Tagger
    return Tagger.from_pretrained(args.model, data_dir=args.data_dir, word_space=args.word_space,
                                  device=args.device)


class Progress:
    """A progress bar on stderr for ``progress(done, total)`` callbacks, made on the first call
    (when the number of photos to encode is known); ``enabled=False`` shows nothing."""

    def __init__(self, desc: str, enabled: bool = True) -> None:
        self.desc, self.enabled, self.bar = desc, enabled, None

    def __call__(self, done: int, total: int) -> None:
        if not self.enabled:
            return
        if self.bar is None:
            from tqdm import tqdm
            self.bar = tqdm(total=total, unit="photo", file=sys.stderr, desc=self.desc, dynamic_ncols=True)
        self.bar.n = done
        self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be >= 1")
    return value


def non_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError("must be >= 0")
    return value


def run_command(func: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    """Run a sub-command with the exit-code contract shared by every command line of the
    project: an SDLError is one line on stderr and exit 2, Ctrl-C exits 130."""
    try:
        return func(args)
    except SDLError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # e.g. `| head`
        return EXIT_OK
