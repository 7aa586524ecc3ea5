"""``hf-hub:OWNER/REPO``: one of our checkpoints on the Hugging Face Hub (timm's and open_clip's convention).

The repository holds :data:`CHECKPOINT_FILE`, an ordinary checkpoint of ours (self-describing,
read strictly, never unpickled). It is fetched with ``huggingface_hub`` into *its* cache
(``HF_HOME`` / ``HF_HUB_CACHE``) and honours its settings: ``HF_ENDPOINT`` (another Hub),
``HF_HUB_OFFLINE=1`` and ``HF_TOKEN`` (private repositories). ``SDL_TAGGER_OFFLINE=1``
means offline here too. ``hf-hub:OWNER/REPO@REVISION`` pins a branch, tag or commit.
``python -m train push`` writes such a repository.
"""
from __future__ import annotations

import re
from pathlib import Path

from .errors import DownloadError, ModelNotFoundError, OfflineError
from .download import ENV_OFFLINE, offline

PREFIX = "hf-hub:"
#: The file a repository of ours holds (open_clip's habit: a library-specific name, so
#: it is never mistaken for another library's ``model.safetensors``).
CHECKPOINT_FILE = "sdl_tagger.safetensors"
_REPO = re.compile(r"[A-Za-z0-9][\w.-]{0,95}/[\w.-]{1,96}")


def is_hub_name(name: object) -> bool:
    return isinstance(name, str) and name.startswith(PREFIX)


def parse_hub_name(name: str) -> tuple[str, str | None]:
    """``hf-hub:OWNER/REPO[@REVISION]`` -> (repo id, revision or None)."""
    spec = name[len(PREFIX):].strip()
    repo, _, revision = spec.partition("@")
    if not _REPO.fullmatch(repo) or ".." in repo:
        raise ModelNotFoundError(f"{name!r}: expected {PREFIX}OWNER/REPO (optionally @REVISION)")
    return repo, revision or None


def hub_checkpoint(name: str, progress: bool = True) -> Path:
    """The local path of the checkpoint an ``hf-hub:`` name stands for (downloaded once)."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import (LocalEntryNotFoundError, RemoteEntryNotFoundError, RepositoryNotFoundError,
                                        RevisionNotFoundError)

    repo, revision = parse_hub_name(name)
    try:
        path = hf_hub_download(repo, CHECKPOINT_FILE, revision=revision, local_files_only=offline(),
                               tqdm_class=None if progress else _silent_tqdm())
    except RepositoryNotFoundError:
        raise ModelNotFoundError(f"{name}: no such repository on the Hub (or it is private: set HF_TOKEN)") from None
    except RevisionNotFoundError:
        raise ModelNotFoundError(f"{name}: the repository has no revision {revision!r}") from None
    except RemoteEntryNotFoundError:
        raise ModelNotFoundError(f"{name}: the repository has no {CHECKPOINT_FILE} "
                                 "(not pushed with `python -m train push`?)") from None
    except LocalEntryNotFoundError:
        raise OfflineError(f"{name} is not in the Hugging Face cache and cannot be downloaded now (offline: "
                           f"HF_HUB_OFFLINE or {ENV_OFFLINE} is set, or the Hub is unreachable)") from None
    except Exception as exc:  # noqa: BLE001 - HTTP errors, network errors of its client, bad ids: one line each
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DownloadError(f"{name}: cannot download {CHECKPOINT_FILE}: {first[:300]}") from None
    return Path(path)


def _silent_tqdm():
    from tqdm.auto import tqdm

    class Silent(tqdm):
        def __init__(self, *args, **kwargs) -> None:
            kwargs["disable"] = True
            super().__init__(*args, **kwargs)

    return Silent
