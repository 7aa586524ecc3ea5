"""Export the demo's example photos from scikit-image's bundled data (public domain / CC0).

    python tools/export_examples.py            # writes demo/examples/*.jpg and SOURCES.md

Only photos whose licence allows redistribution are listed; the source and licence
of each are written next to them in SOURCES.md.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from PIL import Image

OUT = Path(__file__).resolve().parents[1] / "demo" / "examples"
JPEG_QUALITY = 88

#: file stem -> (skimage.data function, what it shows, source, licence)
PHOTOS = {
    "coffee": ("coffee", "A cup of coffee on a saucer",
               "scikit-image `skimage.data.coffee()`; photo by Rachel Michetti, courtesy of Pikolo Espresso Bar",
               "CC0 (no copyright restrictions)"),
    "chelsea": ("chelsea", "Chelsea the cat",
                "scikit-image `skimage.data.chelsea()`; photo by Stefan van der Walt",
                "CC0 (no copyright restrictions)"),
    "astronaut": ("astronaut", "Astronaut Eileen Collins",
                  "scikit-image `skimage.data.astronaut()`; NASA Great Images database (https://flic.kr/p/r9qvLn)",
                  "Public domain (NASA; no known copyright restrictions)"),
    "rocket": ("rocket", "Falcon 9 launching DSCOVR",
               "scikit-image `skimage.data.rocket()`; SpaceX Photos "
               "(https://www.flickr.com/photos/spacexphotos/16511594820/)",
               "Public domain (released by SpaceX)"),
}


def sources_markdown() -> str:
    lines = ["# Example photos: sources and licences", "",
             "Exported from scikit-image's bundled sample data by `tools/export_examples.py`.", "",
             "| file | shows | source | licence |", "|---|---|---|---|"]
    for stem, (_, shows, source, licence) in PHOTOS.items():
        lines.append(f"| {stem}.jpg | {shows} | {source} | {licence} |")
    return "\n".join(lines) + "\n"


def export(out: Path = OUT) -> list[Path]:
    import skimage.data

    out.mkdir(parents=True, exist_ok=True)
    written = []
    for stem, (func, *_rest) in PHOTOS.items():
        path = out / f"{stem}.jpg"
        Image.fromarray(getattr(skimage.data, func)()).convert("RGB").save(path, quality=JPEG_QUALITY,
                                                                          optimize=True)
        written.append(path)
    (out / "SOURCES.md").write_text(sources_markdown(), encoding="utf-8")
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    for path in export(args.out):
        print(f"{path} ({path.stat().st_size // 1024} KiB)")


if __name__ == "__main__":
    main()
