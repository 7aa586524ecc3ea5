"""``python -m train push RUN_DIR OWNER/REPO``: a run's best checkpoint on the Hugging Face Hub.

The repository gets the checkpoint as ``sdl_tagger.safetensors`` (what ``hf-hub:OWNER/REPO``
loads, :mod:`sdl_core.hub`) and a model card written from the run itself: the model's
config and vocabulary (read from the checkpoint, which is checked before anything is
sent), and the quality the run measured (``log.jsonl``: the validation row of the best
epoch; ``best.eval.json`` from ``train evaluate`` where present). Authentication is
``huggingface_hub``'s (``HF_TOKEN`` or ``hf auth login``); ``HF_ENDPOINT`` names another Hub.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

from sdl_core.checkpoint import read_checkpoint
from sdl_core.config import ModelConfig
from sdl_core.hub import CHECKPOINT_FILE
from sdl_core.vocab import Vocabulary

from .errors import RunError

log = logging.getLogger(__name__)

METRICS = ("mAP", "F1@3", "F1@5", "P@3", "R@3")
SETTINGS = ("zsl", "gzsl")


@dataclass
class RunSummary:
    """What the card reports about a run folder."""

    config: ModelConfig
    vocab: Vocabulary
    best_metric: str
    best_row: dict | None  # the validation row of the epoch that wrote the checkpoint
    epochs: int
    run_config: dict
    test: dict | None  # train evaluate's results on held-out data


def _read_json(path: Path) -> dict | None:
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise RunError(f"{path}: unreadable ({exc})") from None


def _log_rows(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    try:
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    except (OSError, ValueError) as exc:
        raise RunError(f"{path}: unreadable training log ({exc})") from None


def summarize_run(run_dir: str | Path, checkpoint: str = "best.safetensors") -> tuple[Path, RunSummary]:
    """The checkpoint to push and what the card says about it."""
    run = Path(run_dir)
    path = run / checkpoint
    if not path.is_file():
        raise RunError(f"{run}: no {checkpoint} (a run folder written by `python -m train fit`?)")
    config, _, vocab = read_checkpoint(path)  # refuses a corrupt file before anything is uploaded
    run_config = _read_json(run / "config.json") or {}
    best_metric = run_config.get("options", {}).get("best_metric", "gzsl_F1@3")
    rows = _log_rows(run / "log.jsonl")
    scored = [r for r in rows if r.get(f"val_{best_metric}") is not None]
    best = max(scored, key=lambda r: r[f"val_{best_metric}"]) if scored else None
    test = _read_json(path.with_suffix(".eval.json"))
    return path, RunSummary(config, vocab, best_metric, best, len(rows), run_config, test)


def _percent(value: object) -> str:
    return f"{100 * value:.1f}" if isinstance(value, (int, float)) else "-"


def _quality_table(values: dict[str, dict]) -> list[str]:
    """Rows ``setting | mAP | F1@3 ...`` in percent, as papers print them."""
    lines = ["| setting | " + " | ".join(METRICS) + " |", "|---|" + "---|" * len(METRICS)]
    for setting in SETTINGS:
        if setting in values:
            cells = " | ".join(_percent(values[setting].get(m)) for m in METRICS)
            lines.append(f"| {setting.upper()} | {cells} |")
    return lines


def _from_row(row: dict) -> dict[str, dict]:
    """``val_zsl_mAP``-style log columns as {setting: {metric: value}}."""
    return {s: {m: row.get(f"val_{s}_{m}") for m in METRICS} for s in SETTINGS}


def model_card(repo_id: str, summary: RunSummary) -> str:
    """The README.md of the repository: YAML metadata, what the model is, how well it did."""
    from huggingface_hub import ModelCardData

    cfg, vocab = summary.config, summary.vocab
    seen = int(vocab.seen.sum())
    meta = ModelCardData(library_name="sdl-tagger", pipeline_tag="zero-shot-image-classification",
                         tags=["zero-shot", "multi-label", "image-tagging", "semantic-diversity-learning"])
    data = summary.run_config.get("data", {})
    pre = cfg.preprocess
    lines = [
        "---", meta.to_yaml(), "---", f"# {repo_id.split('/')[-1]}", "",
        cfg.description or f"An SDL zero-shot multi-label image tagger ({cfg.backbone}, K={cfg.k}).", "",
        "Semantic Diversity Learning (Ben-Cohen et al., ICCV 2021): the image gives K principal vectors in a "
        "word-vector space; a tag scores the best dot product of its word vector with them, so tags never "
        "seen in training can be scored too.", "",
        "```python", "from sdl_core import Tagger", f'tagger = Tagger.from_pretrained("hf-hub:{repo_id}")',
        'print(tagger.tag("photo.jpg", extra_tags=["espresso"], top_k=5))', "```", "",
        f"Command line: `python -m sdl_core tag photo.jpg --model hf-hub:{repo_id}`", "",
        "## Model", "", "| | |", "|---|---|",
        f"| backbone | `{cfg.backbone}` |", f"| principal vectors K | {cfg.k} |",
        f"| word space | `{cfg.word_space.name}` ({cfg.d}-d) |",
        f"| vocabulary | {len(vocab)} tags: {seen} seen in training, {len(vocab) - seen} unseen |",
        f"| input | {pre.size} px, {pre.resize}, {pre.interpolation} |", "",
        "## Measured quality", "",
    ]
    if summary.best_row is not None:
        epoch = summary.best_row.get("epoch")
        lines += [f"Validation ({data.get('val_images', '?')} images) at epoch {epoch} of {summary.epochs}, the "
                  f"epoch with the best {summary.best_metric} (the checkpoint pushed), in percent:", "",
                  *_quality_table(_from_row(summary.best_row)), ""]
    if summary.test is not None:
        lines += [f"Held-out test set (`python -m train evaluate`, {summary.test.get('images', '?')} images):", "",
                  *_quality_table(summary.test.get("results", {})), ""]
    if summary.best_row is None and summary.test is None:
        lines += ["The run logged no validation scores.", ""]
    if data:
        lines += ["## Training data", "", f"{data.get('train_images', '?')} training images, "
                  f"{data.get('seen_tags', '?')} seen and {data.get('unseen_tags', '?')} unseen tags.", ""]
    return "\n".join(lines)


def push_run(run_dir: str | Path, repo_id: str, private: bool = False, checkpoint: str = "best.safetensors",
             message: str | None = None) -> str:
    """Create (or reuse) the repository and commit the checkpoint with its card in one commit;
    returns the commit's URL."""
    from huggingface_hub import CommitOperationAdd, HfApi
    from huggingface_hub.errors import HfHubHTTPError

    path, summary = summarize_run(run_dir, checkpoint)
    card = model_card(repo_id, summary)
    api = HfApi()
    operations = [CommitOperationAdd(CHECKPOINT_FILE, str(path)), CommitOperationAdd("README.md", card.encode())]
    try:
        api.create_repo(repo_id, private=private, exist_ok=True)
        info = api.create_commit(repo_id, operations, commit_message=message or f"Upload {path.name} from sdl-tagger")
    except HfHubHTTPError as exc:
        status = exc.response.status_code if exc.response is not None else None
        hint = " (set HF_TOKEN or run `hf auth login` with a write token)" if status in (401, 403) else ""
        raise RunError(f"the Hub refused the upload to {repo_id}: {_first_line(exc)}{hint}") from None
    except Exception as exc:  # noqa: BLE001 - the HTTP client's errors are its own hierarchy; one line each
        raise RunError(f"cannot upload to {repo_id} at {api.endpoint}: {_first_line(exc)}") from None
    log.info("pushed %s to %s", path, info.commit_url)
    return info.commit_url


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:300]
