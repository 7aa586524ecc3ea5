"""Scoring a model on the labelled dev photos (``python -m sdl_core evaluate-dev``).

The dev set (a folder with ``dev/images``, ``dev/labels.json`` and ``score.py``; the
command line's default is ``../shared/eval``) is not part of the repository; its own
scorer is imported from there, never copied.
Each photo is scored on the 81 NUS-81 concepts and on the union of every photo's
typed tags, so the scorer can compute the typed-tag retrieval AUC too.
"""
from __future__ import annotations

import importlib.util
import io
import json
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from .errors import SDLError

log = logging.getLogger(__name__)


class EvalSetError(SDLError):
    """The dev evaluation folder is missing or incomplete."""


@dataclass
class DevSet:
    """The dev photos, their labels, and the scorer module that ships beside them."""

    folder: Path
    labels: dict[str, Any]
    scorer: ModuleType

    @property
    def images(self) -> list[Path]:
        return [self.folder / "dev" / "images" / name for name in self.labels]

    def tags(self) -> list[str]:
        """NUS-81 concepts, then every typed tag of every photo (each once)."""
        typed = [t for lab in self.labels.values() for t in lab.get("typed_true", []) + lab.get("typed_false", [])]
        return list(dict.fromkeys(list(self.scorer.NUS81) + typed))


def load_dev_set(eval_dir: str | Path) -> DevSet:
    """Open the dev set; a clear error names what is missing."""
    folder = Path(eval_dir)
    needed = [folder / "score.py", folder / "dev" / "labels.json", folder / "dev" / "images"]
    missing = [str(p) for p in needed if not p.exists()]
    if missing:
        raise EvalSetError(f"no dev evaluation set at {folder}: missing {', '.join(missing)} "
                           "(give its folder with --eval-dir)")
    spec = importlib.util.spec_from_file_location("sdl_dev_score", folder / "score.py")
    scorer = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(scorer)
        labels = json.loads((folder / "dev" / "labels.json").read_text(encoding="utf-8"))
    except (OSError, SyntaxError, ValueError) as exc:
        raise EvalSetError(f"{folder}: cannot read the scorer or labels ({exc})") from None
    absent = [name for name in labels if not (folder / "dev" / "images" / name).is_file()]
    if absent:
        raise EvalSetError(f"{folder}: labelled photos missing from dev/images: {absent[:5]}")
    return DevSet(folder, labels, scorer)


def predict(tagger, dev: DevSet, batch_size: int = 12) -> dict[str, dict[str, float]]:
    """{photo: {tag: score}} for every dev tag on every dev photo."""
    tags = dev.tags()
    results = tagger.tag([str(p) for p in dev.images], extra_tags=tags, only_extra=True, top_k=0,
                         batch_size=batch_size)
    preds = {}
    for path, result in zip(dev.images, results):
        preds[path.name] = {t.tag: t.score for t in result.tags}
        if result.not_in_vocabulary:
            log.warning("%s: %d tags have no word vector and rank last: %s", path.name,
                        len(result.not_in_vocabulary), result.not_in_vocabulary[:5])
    return preds


def score(dev: DevSet, preds: dict[str, dict[str, float]], out_path: str | Path | None = None,
          per_concept: bool = False) -> tuple[dict[str, Any], str]:
    """Run the dev set's own scorer; returns (its result dict, its printed report)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(out_path) if out_path else Path(tmp) / "predictions.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(preds, ensure_ascii=False, indent=1), encoding="utf-8")
        report = io.StringIO()
        result = dev.scorer.score_files(str(dev.folder / "dev" / "labels.json"), str(path),
                                        per_concept=per_concept, allow_missing=True, out=report)
    return result, report.getvalue()


def evaluate_dev(tagger, eval_dir: str | Path, out_path: str | Path | None = None,
                 per_concept: bool = False) -> tuple[dict[str, Any], str]:
    """Predict and score in one call (what the CLI command does)."""
    dev = load_dev_set(eval_dir)
    return score(dev, predict(tagger, dev), out_path, per_concept)
