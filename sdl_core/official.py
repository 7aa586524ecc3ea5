"""The authors' released format, apart from ours (:mod:`sdl_core.checkpoint`).

- Their NUS-WIDE model ``NUS_mtresnet_224.pth``: read with ``torch.load(weights_only=True)``
  only, its keys mapped strictly onto timm's ``tresnet_m`` (:func:`import_official`).
- Their vocabulary files (``classes.pickle``, ``unseen_classes.pickle``,
  ``wordvec_array.pickle``), read by :meth:`sdl_core.vocab.Vocabulary.from_authors_folder`.
- Where to fetch both (``python -m sdl_core download-official DIR``, through
  :mod:`sdl_core.download`). The authors published no checksum for their ``.pth``: we print
  its SHA-256 and then validate it structurally by importing it strictly.
"""
from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import TYPE_CHECKING

from .config import ModelConfig, PreprocessConfig
from .download import RemoteFile, fetch
from .errors import CheckpointError
from .files import load_torch_weights
from .vocab import Vocabulary
from .wordvec import AUTHORS_FASTTEXT

if TYPE_CHECKING:  # torch and timm load when a model is converted: the file list below needs neither
    import torch

    from .model import SDLModel

log = logging.getLogger(__name__)

#: The authors' NUS-WIDE model: TResNet-M, squash-resize to 224 with Pillow's default
#: (bicubic) filter, pixels / 255 and no mean/std.
OFFICIAL_PREPROCESS = PreprocessConfig(size=224, resize="squash", interpolation="bicubic")


def official_key_to_timm(key: str) -> str:
    """Rename one key of the authors' TResNet state dict to timm's ``tresnet_m``.

    The authors wrap conv+norm as ``Sequential(conv, InPlaceABN)`` (``convN.0`` /
    ``convN.1``), anti-aliased ones once more (``convN.0.0`` / ``convN.0.1``), and
    downsample paths as ``downsample.1.0`` / ``downsample.1.1``; timm names them
    ``.conv`` and ``.bn`` and keeps the body under ``body.``.
    """
    parts = key.split(".")
    out: list[str] = []
    i = 0
    while i < len(parts):
        part = parts[i]
        out.append(part)
        i += 1
        wraps_conv = re.fullmatch(r"conv\d+", part) is not None
        if part == "downsample" and i < len(parts):
            out.append(parts[i])  # position of the conv block inside the downsample path
            i += 1
            wraps_conv = True
        if wraps_conv and i + 1 < len(parts):
            if parts[i] == "0" and parts[i + 1].isdigit():
                i += 1  # the anti-alias wrapper: convN.0.<0|1>
            out.append("conv" if parts[i] == "0" else "bn")
            i += 1
    return "body." + ".".join(out)


def official_state_to_ours(state: dict[str, torch.Tensor], k: int, d: int) -> dict[str, torch.Tensor]:
    """Map the authors' state dict onto :class:`SDLModel` with a tresnet_m backbone."""
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key == "embedding.weight":
            if tuple(value.shape[:1]) != (k * d,):
                raise CheckpointError(f"embedding.weight has {value.shape[0]} rows, expected K*D = {k * d}")
            out["head.weight"] = value
            continue
        new = official_key_to_timm(key)
        if new.endswith(".bn.weight"):
            value = value.abs() + 1e-5  # InPlaceABN stores signed weights; BatchNorm wants |w| + eps
        out["backbone." + new] = value
    return out


def import_official(checkpoint: str | Path, data_dir: str | Path, out: str | Path | None = None,
                    k: int | None = None) -> tuple[SDLModel, Vocabulary]:
    """Convert ``NUS_mtresnet_224.pth`` + the authors' data folder into our model.

    The .pth is read with ``weights_only=True``: a file that tries to run code is refused.
    """
    checkpoint = Path(checkpoint)
    if not checkpoint.is_file():
        raise CheckpointError(f"{checkpoint}: no such file")
    raw = load_torch_weights(checkpoint, f"{checkpoint.name}: refused or unreadable with weights_only=True "
                                         "(not a plain PyTorch checkpoint, or it tries to run code)")
    state = raw.get("model") if isinstance(raw, dict) else None
    if not isinstance(state, dict) or "embedding.weight" not in state:
        raise CheckpointError(f"{checkpoint.name}: expected the authors' dict with 'model' holding "
                              "'embedding.weight' (the SDL head)")
    import torch

    from .checkpoint import load_state_strict, save_checkpoint
    not_tensors = [str(key) for key, value in state.items() if not isinstance(value, torch.Tensor)]
    if not_tensors:
        raise CheckpointError(f"{checkpoint.name}: model.{not_tensors[0]} is not a tensor "
                              f"({len(not_tensors)} such entries): not the authors' checkpoint")
    vocab = Vocabulary.from_authors_folder(data_dir)
    num_classes = raw.get("num_classes")
    if num_classes is not None and not isinstance(num_classes, int):
        raise CheckpointError(f"{checkpoint.name}: num_classes is {str(num_classes)[:50]!r}, not a number")
    if num_classes is not None and num_classes != len(vocab):
        raise CheckpointError(f"{checkpoint.name} was trained on {num_classes} classes, "
                              f"but {data_dir} has {len(vocab)}")
    d = vocab.dim
    rows = int(state["embedding.weight"].shape[0])
    if k is None:
        if rows % d:
            raise CheckpointError(f"embedding.weight has {rows} rows, not a multiple of D={d}")
        k = rows // d
    config = ModelConfig(kind="sdl", backbone="tresnet_m", k=k, word_space=AUTHORS_FASTTEXT,
                         preprocess=OFFICIAL_PREPROCESS, reduction="max", name="sdl_tresnet_m.nus_wide",
                         description="The authors' SDL model (ICCV 2021), NUS-WIDE 925 seen / 81 unseen, K=7")
    from .model import SDLModel
    model = SDLModel(config)
    ours = official_state_to_ours(state, k, d)
    for key in model.state_dict():  # BatchNorm's step counter has no InPlaceABN counterpart
        if key.endswith("num_batches_tracked") and key not in ours:
            ours[key] = torch.tensor(0, dtype=torch.long)
    load_state_strict(model, ours, what="tresnet_m SDL model")
    model.eval()
    if out is not None:
        save_checkpoint(model, vocab, out)
    return model, vocab


# --- where the authors' files are ----------------------------------------------------

_REPO_DATA = "https://raw.githubusercontent.com/Alibaba-MIIL/ZS_SDL/main/data/NUS_WIDE/"
#: The authors' NUS-WIDE vocabulary files (checksums and sizes of the published files).
OFFICIAL_DATA = (
    RemoteFile(_REPO_DATA + "classes.pickle", "classes.pickle",
               "a8abc64a04f3810afe6357a9a8fa104aec78f590727a607c7557e33c13af6087", 11_954),
    RemoteFile(_REPO_DATA + "unseen_classes.pickle", "unseen_classes.pickle",
               "d2790e216a90629a07f5caf1534233a0dac7260f98b3d143b232b1648762e153", 709),
    RemoteFile(_REPO_DATA + "wordvec_array.pickle", "wordvec_array.pickle",
               "6f8d90a5b6e68ba58bfe81c23bf0c4ad8919628660fac1f7de7d34eb8d085e5a", 1_207_363),
)
#: The authors' model (their README's link without its expired signature). Its size is
#: its tensors' (134,809,600 bytes of float32) plus a little pickle: about 135 MB.
OFFICIAL_MODEL = RemoteFile("https://miil-public-eu.oss-eu-central-1.aliyuncs.com/model-zoo/ZSL/NUS_mtresnet_224.pth",
                            "NUS_mtresnet_224.pth", None, 134_900_000)


def download_official(folder: str | Path, progress: bool = True) -> tuple[Path, Path]:
    """Fetch the authors' data files and model into ``folder``; returns (model, data_dir)."""
    folder = Path(folder)
    for remote in OFFICIAL_DATA:
        fetch(remote, folder, progress)
    return fetch(OFFICIAL_MODEL, folder, progress), folder
