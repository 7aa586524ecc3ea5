#!/usr/bin/env python3
"""Numbers from a person's judgement of top-10 tags (docs/quality/judged_dev_*.json).

    python -m sdl_core tag PHOTOS... --json > top.json
    python tools/judge_report.py template top.json > judged.json   # then mark each "?" by looking
    python tools/judge_report.py report judged.json [other.json ...]

A judgement file is ``{photo: [[tag, verdict], ...]}``, best tag first, verdict one of
``ok`` (a person would put it on the photo), ``wrong``, ``absurd`` (a person would laugh
at it). Unseen tags are written ``*tag*``, as the CLI prints them. ``report`` prints
precision@10, the absurd share, photos with an absurd tag in their top 3, and the
unseen tags per photo (all, and those judged ok).
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

VERDICTS = ("ok", "wrong", "absurd")


class JudgementError(ValueError):
    """A judgement file that does not follow the format above."""


@dataclass(frozen=True)
class JudgedNumbers:
    """What one judgement file says about a model's top tags."""

    photos: int
    precision: float  # share of ok tags in the judged top k
    absurd_share: float
    absurd_count: int
    absurd_top3_photos: int
    unseen_per_photo: float
    unseen_ok_per_photo: float
    pending: int  # tags still marked "?"

    def line(self) -> str:
        return (f"photos={self.photos} P@10={self.precision:.3f} absurd={self.absurd_count} "
                f"({self.absurd_share:.1%}) absurd-in-top3 photos={self.absurd_top3_photos} "
                f"unseen/photo={self.unseen_per_photo:.2f} (ok {self.unseen_ok_per_photo:.2f})"
                + (f" pending={self.pending}" if self.pending else ""))


def load_judgements(path: Path) -> dict[str, list[tuple[str, str]]]:
    """Read and check a judgement file."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise JudgementError(f"{path}: cannot read judgements ({exc})") from None
    if not isinstance(data, dict) or not data:
        raise JudgementError(f"{path}: expected a non-empty object photo -> [[tag, verdict], ...]")
    out = {}
    for photo, rows in data.items():
        if not isinstance(rows, list) or not all(isinstance(r, list) and len(r) == 2 for r in rows):
            raise JudgementError(f"{path}: {photo}: each entry must be [tag, verdict]")
        bad = [v for _, v in rows if v not in VERDICTS + ("?",)]
        if bad:
            raise JudgementError(f"{path}: {photo}: unknown verdicts {bad[:3]} (use {', '.join(VERDICTS)})")
        out[photo] = [(str(t), str(v)) for t, v in rows]
    return out


def is_unseen(tag: str) -> bool:
    return len(tag) > 2 and tag.startswith("*") and tag.endswith("*")


def summarize(judged: dict[str, list[tuple[str, str]]], k: int = 10) -> JudgedNumbers:
    """Precision, absurd share and unseen counts over each photo's top ``k``."""
    rows = {photo: tags[:k] for photo, tags in judged.items()}
    flat = [v for tags in rows.values() for _, v in tags]
    decided = [v for v in flat if v != "?"]
    n = max(1, len(decided))
    photos = len(rows)
    return JudgedNumbers(
        photos=photos,
        precision=sum(v == "ok" for v in decided) / n,
        absurd_share=sum(v == "absurd" for v in decided) / n,
        absurd_count=sum(v == "absurd" for v in decided),
        absurd_top3_photos=sum(any(v == "absurd" for _, v in tags[:3]) for tags in rows.values()),
        unseen_per_photo=sum(is_unseen(t) for tags in rows.values() for t, _ in tags) / photos,
        unseen_ok_per_photo=sum(is_unseen(t) and v == "ok" for tags in rows.values() for t, v in tags) / photos,
        pending=len(flat) - len(decided))


def template(tag_json: Path, k: int = 10) -> dict[str, list[list[str]]]:
    """A judgement file to fill in, from ``python -m sdl_core tag ... --json`` output."""
    try:
        data = json.loads(tag_json.read_text(encoding="utf-8"))
        results = data["results"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise JudgementError(f"{tag_json}: not the JSON of `python -m sdl_core tag --json` ({exc})") from None
    return {Path(r["image"]).name: [[t["tag"] if t["seen"] else f"*{t['tag']}*", "?"] for t in r["tags"][:k]]
            for r in results}


def dumps(judged: dict[str, list[list[str]]]) -> str:
    """One photo per block, one [tag, verdict] per line: easy to read and to diff."""
    blocks = []
    for photo, rows in judged.items():
        lines = ",\n".join(f"    {json.dumps(list(r))}" for r in rows)
        blocks.append(f"  {json.dumps(photo)}: [\n{lines}\n  ]")
    return "{\n" + ",\n".join(blocks) + "\n}\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    rep = sub.add_parser("report", help="numbers of one or more judgement files")
    rep.add_argument("files", nargs="+", type=Path)
    rep.add_argument("--k", type=int, default=10)
    tpl = sub.add_parser("template", help="a judgement file to fill in, from `tag --json` output")
    tpl.add_argument("tag_json", type=Path)
    tpl.add_argument("--k", type=int, default=10)
    args = parser.parse_args(argv)
    try:
        if args.command == "template":
            sys.stdout.write(dumps(template(args.tag_json, args.k)))
            return 0
        for path in args.files:
            print(f"{path.name}: {summarize(load_judgements(path), args.k).line()}")
    except JudgementError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
