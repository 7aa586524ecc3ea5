"""``import-official`` and ``download-official``: the authors' released NUS-WIDE model."""
from __future__ import annotations

import argparse

from .common import EXIT_OK


def cmd_import_official(args: argparse.Namespace) -> int:
    from ..official import import_official
    model, vocab = import_official(args.checkpoint, args.data_dir, args.out)
    print(f"wrote {args.out}: {model.config.backbone}, K={model.config.k}, D={model.config.d}, "
          f"{len(vocab)} tags ({int((~vocab.seen).sum())} unseen)")
    return EXIT_OK


def cmd_download_official(args: argparse.Namespace) -> int:
    from ..download import sha256_of
    from ..official import download_official, import_official
    model_path, data_dir = download_official(args.folder)
    print(f"downloaded {model_path} (sha256 {sha256_of(model_path)}) and the vocabulary files into {data_dir}")
    if args.out:
        model, vocab = import_official(model_path, data_dir, args.out)
        print(f"wrote {args.out}: K={model.config.k}, D={model.config.d}, {len(vocab)} tags")
    return EXIT_OK


def add_commands(sub: argparse._SubParsersAction) -> None:
    imp = sub.add_parser("import-official", help="convert the authors' NUS_mtresnet_224.pth to our format")
    imp.add_argument("checkpoint", help="the authors' .pth file")
    imp.add_argument("data_dir", help="their data folder (classes.pickle, unseen_classes.pickle, wordvec_array.pickle)")
    imp.add_argument("out", help="output .safetensors path")
    imp.set_defaults(func=cmd_import_official)

    dl = sub.add_parser("download-official", help="download the authors' NUS-WIDE model and data (needs a network)")
    dl.add_argument("folder", help="where to put NUS_mtresnet_224.pth and the three .pickle files")
    dl.add_argument("--out", help="also convert to this .safetensors checkpoint")
    dl.set_defaults(func=cmd_download_official)
