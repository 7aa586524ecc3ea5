"""Reading images safely and turning them into model input.

Uploads can be anything: we open lazily, check the declared size against a pixel
limit *before* decoding (decompression bombs), take the first frame of animations,
apply the EXIF orientation, and flatten every mode (CMYK, 16-bit, palette, alpha)
to 8-bit RGB.
"""
from __future__ import annotations

import functools
import io
import struct
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Sequence, Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .config import PreprocessConfig
from .errors import ImageError

if TYPE_CHECKING:  # torch loads on the first to_tensor: reading images and the limits need no torch
    import torch

#: Largest image we decode, in pixels (width x height as declared in the header).
MAX_IMAGE_PIXELS = 64_000_000
#: Largest file we read, in bytes.
MAX_IMAGE_BYTES = 50 * 1024 * 1024
#: Images with a longer side than this are downscaled right after decoding, so
#: memory stays bounded whatever the input.
MAX_WORKING_SIDE = 2048
#: Folder tagging and indexing decode a JPEG at a reduced scale (in the DCT) while both
#: sides keep this many times the model's input: 3-4x faster on camera photos, and the model's
#: input moves by 0.2-0.4 grey levels on average, less than re-saving the JPEG at quality 95 (README "Speed").
DRAFT_MARGIN = 2
#: Smallest side that still makes sense to tag.
MIN_IMAGE_SIDE = 1
#: The only Pillow decoders we run on uploads. Others (EPS runs Ghostscript, plus
#: rarely used parsers) are refused as "unsupported format" before any decoding.
ALLOWED_FORMATS = ("JPEG", "PNG", "GIF", "WEBP", "AVIF", "BMP", "DIB", "TIFF", "ICO", "PPM", "TGA", "QOI")
#: Leading bytes of formats people upload that we do not read, to name them in the message.
_KNOWN_UNSUPPORTED = ((b"ftypheic", "HEIC"), (b"ftypheix", "HEIC"), (b"ftyphevc", "HEIC"),
                      (b"ftypmif1", "HEIF"), (b"%PDF", "PDF"), (b"%!PS", "PostScript/EPS"),
                      (b"<svg", "SVG"), (b"<?xml", "SVG/XML"), (b"8BPS", "Photoshop PSD"))

_ORIENTATION = 0x0112  # the EXIF tag
#: What Pillow's decoders raise on malformed data. Besides OSError/ValueError, its
#: pure-Python plugins (GIF, QOI, TGA, TIFF tags...) fail with IndexError, struct.error
#: and the like on truncated or mutated files (found by tests/core/test_fuzz_images.py).
_DECODE_ERRORS = (OSError, ValueError, SyntaxError, EOFError, IndexError, KeyError, TypeError, ArithmeticError,
                  struct.error, Image.DecompressionBombError)

ImageSource = Union[str, Path, bytes, Image.Image]

_RESAMPLE = {
    "bicubic": Image.Resampling.BICUBIC,
    "bilinear": Image.Resampling.BILINEAR,
    "nearest": Image.Resampling.NEAREST,
    "lanczos": Image.Resampling.LANCZOS,
}


def _open(source: ImageSource) -> tuple[Image.Image, str]:
    """The lazily opened image and the name to use in messages."""
    if isinstance(source, Image.Image):
        return source, Path(getattr(source, "filename", "") or "image").name
    if isinstance(source, (bytes, bytearray)):
        data = bytes(source)
        name = "image"
    else:
        path = Path(source)
        name = path.name
        if not path.is_file():
            raise ImageError(f"{path}: no such file")
        size = path.stat().st_size
        if size > MAX_IMAGE_BYTES:
            raise ImageError(f"{name}: file is {size / 2**20:.1f} MiB, above the {MAX_IMAGE_BYTES // 2**20} MiB limit")
        data = path.read_bytes()
    if not data:
        raise ImageError(f"{name}: file is empty")
    if len(data) > MAX_IMAGE_BYTES:
        raise ImageError(f"{name}: file is above the {MAX_IMAGE_BYTES // 2**20} MiB limit")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            return Image.open(io.BytesIO(data), formats=_decoders()), name
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageError(f"{name}: image declares too many pixels (limit {MAX_IMAGE_PIXELS:,})") from None
    except UnidentifiedImageError:
        raise ImageError(f"{name}: {_unsupported_kind(data)} "
                         f"(supported: {', '.join(ALLOWED_FORMATS)})") from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise ImageError(f"{name}: cannot read image ({exc})") from None


def _decoders() -> list[str]:
    """ALLOWED_FORMATS that this Pillow build registers (Pillow fails on unknown names)."""
    Image.init()
    return [f for f in ALLOWED_FORMATS if f in Image.OPEN]


def _unsupported_kind(data: bytes) -> str:
    """Name a format we refuse, so the message says what to convert from."""
    head = data[:64]
    for magic, kind in _KNOWN_UNSUPPORTED:
        if magic in head:
            return f"unsupported format {kind}; convert it to JPEG or PNG"
    return "not an image, or an unsupported format"


def _to_rgb(img: Image.Image) -> Image.Image:
    """Flatten any Pillow mode to 8-bit RGB; transparency is composited on white."""
    if img.mode == "RGB":
        return img
    if img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        lo, hi = float(arr.min()), float(arr.max())
        scale = 255.0 / (hi - lo) if hi > lo else 0.0
        img = Image.fromarray(((arr - lo) * scale).astype(np.uint8), mode="L")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")


def load_image(source: ImageSource, max_side: int = MAX_WORKING_SIDE, *, draft_side: int | None = None
               ) -> Image.Image:
    """Open ``source`` (path, bytes or PIL image) as an upright 8-bit RGB image.

    Raises :class:`ImageError` with a readable message for anything that is not a
    usable image. Huge but valid images are downscaled to ``max_side``. ``draft_side``:
    a JPEG is decoded at the smallest scale (1/2, 1/4, 1/8, in the DCT) that keeps both
    sides at least this long (see :data:`DRAFT_MARGIN`).
    """
    img, name = _open(source)
    width, height = img.size
    if width * height > MAX_IMAGE_PIXELS:
        raise ImageError(f"{name}: {width}x{height} is above the limit of "
                         f"{MAX_IMAGE_PIXELS:,} pixels")
    if min(width, height) < MIN_IMAGE_SIDE:
        raise ImageError(f"{name}: image has no pixels")
    try:
        if getattr(img, "is_animated", False):
            img.seek(0)
        if img.format in ("JPEG", "MPO") and (draft_side or max(width, height) > 2 * max_side):
            side = min(draft_side or max_side, max_side)  # decode at reduced scale: bounded memory
            img.draft("RGB", (side, side))
        img.load()
        if img.getexif().get(_ORIENTATION, 1) != 1:  # exif_transpose copies even when upright
            img = ImageOps.exif_transpose(img)
        img = _to_rgb(img)
    except ImageError:
        raise
    except _DECODE_ERRORS as exc:
        raise ImageError(f"{name}: image data is corrupt or truncated ({exc or type(exc).__name__})") from None
    if max(img.size) > max_side:  # resize returns a new image: no full-size copy
        scale = max_side / max(img.size)
        size = (max(1, round(img.width * scale)), max(1, round(img.height * scale)))
        img = img.resize(size, Image.Resampling.LANCZOS, reducing_gap=2.0)
    return img.copy() if img is source else img  # never hand back the caller's own object


def resize_for_model(img: Image.Image, cfg: PreprocessConfig) -> Image.Image:
    """Resize (and crop) an RGB image exactly as the model was trained."""
    resample = _RESAMPLE[cfg.interpolation]
    if cfg.resize == "squash":
        return img.resize((cfg.size, cfg.size), resample)
    width, height = img.size
    scale = cfg.size / min(width, height)
    new_w, new_h = max(cfg.size, round(width * scale)), max(cfg.size, round(height * scale))
    return centre_square(img.resize((new_w, new_h), resample), cfg.size)


def centre_square(img: Image.Image, side: int | None = None) -> Image.Image:
    """The centred ``side`` x ``side`` square of ``img`` (default: the largest one): the part
    of a photo a ``shorter_side_crop`` model sees (the demo draws its maps over it)."""
    side = min(img.size) if side is None else side
    left, top = (img.width - side) // 2, (img.height - side) // 2
    return img.crop((left, top, left + side, top + side))


def model_pixels(img: Image.Image, cfg: PreprocessConfig) -> np.ndarray:
    """The model's view of an RGB image, (S, S, 3) uint8: what :func:`stack_pixels` stacks.
    (Pillow resizes without the GIL, so reader threads run this beside the model.)"""
    return np.asarray(resize_for_model(img, cfg), dtype=np.uint8)


@functools.lru_cache(maxsize=8)
def _normalised_levels(mean: tuple[float, ...], std: tuple[float, ...]) -> np.ndarray:
    """(3, 256) float32: each channel's 256 input levels, normalised with the float32
    arithmetic the model was always fed (x / 255, then (x - mean) / std)."""
    import torch
    levels = torch.arange(256, dtype=torch.float32).div_(255.0).view(1, 256).repeat(3, 1)
    if any(m != 0.0 for m in mean) or any(s != 1.0 for s in std):
        levels = (levels - torch.tensor(mean).view(3, 1)) / torch.tensor(std).view(3, 1)
    return levels.numpy()


def stack_pixels(arrays: Sequence[np.ndarray], cfg: PreprocessConfig) -> torch.Tensor:
    """Stack (S, S, 3) uint8 images into a normalised float tensor (B, 3, S, S).

    A table lookup per channel gives the same floats as normalising each pixel: 0.3 ms an
    image instead of up to 12 ms for torch's ops on the permuted uint8 batch."""
    import torch
    table = _normalised_levels(tuple(cfg.mean), tuple(cfg.std))
    batch = np.stack(arrays)
    out = np.empty((batch.shape[0], 3, *batch.shape[1:3]), np.float32)
    for channel in range(3):
        np.take(table[channel], batch[..., channel], out=out[:, channel])
    return torch.from_numpy(out)


def to_tensor(images: list[Image.Image], cfg: PreprocessConfig) -> torch.Tensor:
    """Stack RGB images into a normalised float tensor of shape (B, 3, S, S)."""
    return stack_pixels([model_pixels(img, cfg) for img in images], cfg)
