"""The public face: ``Tagger.from_pretrained(...)`` and ``tagger.tag(image, ...)``.

A request's tags are the model's vocabulary (or one given) plus typed tags embedded
in the model's own word space; a typed tag the space cannot embed is reported in
``not_in_vocabulary``. Scores are ``reduce_k <A_k, w_t>`` (see :mod:`sdl_core.scoring`).
"""
from __future__ import annotations

from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from itertools import islice
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np
import torch
from PIL import Image

from .diversity import diverse_top_k
from .evidence_gate import evidence_matrix, unsupported
from .errors import SDLError, TagInputError, WordSpaceError
from .factory import ModelSource, load_model
from .images import DRAFT_MARGIN, ImageSource, load_image, model_pixels, stack_pixels, to_tensor
from .model import Encoded, PrincipalVectorModel
from .optimize import UNOPTIMISED, InferenceOptions, InferenceRunner
from .scoring import ranks_of, score_tags, top_k_indices
from .tags import clean_tags
from .vocab import Vocabulary, check_word_space
from .wordvec import TableSpace, WordSpace

#: Threads that decode and resize files for the model (tag_files, encode_files), and how many
#: batches they read ahead: two keep both cores busy whenever the model leaves one idle.
READ_THREADS = 2
READ_AHEAD = 2


@dataclass(frozen=True)
class TagResult:
    """One ranked tag. ``principal`` is the index k of the vector that scores it best."""

    tag: str
    score: float
    seen: bool
    principal: int
    typed: bool = False
    approximate: bool = False  # its vector is a stand-in (bridged into a table space), not the space's own

    @property
    def display(self) -> str:
        """The tag as the authors' demo prints it: unseen tags as ``*tag*``."""
        return self.tag if self.seen else f"*{self.tag}*"

    def to_dict(self) -> dict:
        return {"tag": self.tag, "score": round(self.score, 6), "seen": self.seen,
                "principal": self.principal, "typed": self.typed, "approximate": self.approximate}


@dataclass(frozen=True)
class TypedTag(TagResult):
    """A tag the user typed, shown or not: ``rank`` is its place among all ranked tags
    (1 = best, in score order before any tags are left out of the shown list);
    ``in_top_k`` says whether it is among the shown tags."""

    typed: bool = True
    rank: int = 0
    in_top_k: bool = False

    def to_dict(self) -> dict:
        return {**super().to_dict(), "rank": self.rank, "in_top_k": self.in_top_k}


@dataclass
class ImageTags:
    """Ranked tags for one image; iterates like a list of :class:`TagResult`.

    ``typed``: every typed tag that has a word vector, in the order typed, shown or not;
    ``ranked``: how many tags were ranked (the vocabulary plus the typed additions)."""

    tags: list[TagResult]
    not_in_vocabulary: list[str] = field(default_factory=list)
    image: str | None = None
    typed: list[TypedTag] = field(default_factory=list)
    ranked: int = 0

    def __iter__(self) -> Iterator[TagResult]:
        return iter(self.tags)

    def __len__(self) -> int:
        return len(self.tags)

    def __getitem__(self, i: int) -> TagResult:
        return self.tags[i]

    @property
    def typed_outside(self) -> list[TypedTag]:
        """The typed tags that did not make the shown list."""
        return [t for t in self.typed if not t.in_top_k]

    def above(self, min_score: float | None) -> "ImageTags":
        """These results with only the tags scoring at least ``min_score`` (all when None)."""
        if min_score is None:
            return self
        typed = [replace(t, in_top_k=t.in_top_k and t.score >= min_score) for t in self.typed]
        return replace(self, tags=[t for t in self.tags if t.score >= min_score], typed=typed)

    def to_dict(self) -> dict:
        return {"image": self.image, "tags": [t.to_dict() for t in self.tags],
                "typed": [t.to_dict() for t in self.typed], "ranked": self.ranked,
                "not_in_vocabulary": list(self.not_in_vocabulary)}


@dataclass
class Analysis:
    """Tags plus exact attention maps for one image (what the demo shows).

    ``principal_maps``: (K, h, w), where each principal vector looks; ``tag_maps``:
    tag -> (K, h, w), the map of every principal vector for that tag (spatial mean
    = its per-vector score for SDL models); ``principal_tags[k]``: shown tags that
    vector k wins.
    """

    tags: ImageTags
    image: Image.Image
    principal_maps: np.ndarray
    tag_maps: dict[str, np.ndarray]
    principal_tags: list[list[str]]


@dataclass
class _Request:
    """The tags one request ranks: the base vocabulary's rows, then the typed additions.
    ``typed_rows``: the row of each typed tag that has a vector, in the order typed."""

    tags: list[str]
    seen: np.ndarray
    typed: np.ndarray
    not_in_vocabulary: list[str]
    tag_tensor: torch.Tensor
    approximate: np.ndarray
    typed_rows: list[int]
    #: (classes, base rows) 0/1: each vocabulary row's evidence classes (sdl_core.evidence_gate), or None
    evidence: torch.Tensor | None = None


class Tagger:
    """A loaded principal-vector model with its vocabulary and word space.

    ``self.model`` stays as given (save it, fingerprint it); inference runs on an
    optimised copy (BatchNorm folded, channels_last; see :mod:`sdl_core.optimize`)
    whose outputs equal the model's up to float rounding. ``optimize=False`` runs
    the model itself.
    """

    def __init__(self, model: PrincipalVectorModel, vocabulary: Vocabulary, word_space: WordSpace | None = None,
                 device: str | torch.device = "cpu", optimize: bool | InferenceOptions = True) -> None:
        self.device = torch.device(device)
        self.model = model.eval().to(self.device)
        self.config = model.config
        if vocabulary.dim != self.config.d:
            raise WordSpaceError(f"vocabulary is {vocabulary.dim}-d but the model's word space "
                                 f"{self.config.word_space.name} is {self.config.d}-d")
        self.vocabulary = vocabulary
        if word_space is None:
            word_space = TableSpace(self.config.word_space, vocabulary.tags, vocabulary.vectors)
        check_word_space(word_space, self.config.word_space.name, self.config.d, vocabulary)
        self.word_space = word_space
        self._vocab_tensor = torch.from_numpy(vocabulary.vectors).to(self.device)
        #: min_seen_evidence (see sdl_core.conse): 0 shows seen tags on their scores alone
        self._gate = float(self.config.extra.get("min_seen_evidence") or 0.0)
        self._evidence = evidence_matrix(vocabulary) if self._gate > 0 else None
        if isinstance(optimize, InferenceOptions):
            options = optimize
        else:
            options = InferenceOptions() if optimize else UNOPTIMISED
        self._runner = InferenceRunner(self.model, options)
        self._runner.get()  # pay for the copy at load time, not on the first request
        #: Where the model came from, when it was loaded by name or path (``from_pretrained``).
        self.source: ModelSource | None = None

    @property
    def name(self) -> str:
        return self.config.name or self.config.backbone

    # -- construction ---------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, name_or_path: str | Path | None = None, *, data_dir: str | Path | None = None,
                        word_space: str | Path | WordSpace | None = None, device: str = "cpu") -> "Tagger":
        """Load a registered name (default: the offline default model), one of our
        ``.safetensors`` checkpoints, or the authors' ``.pth`` with their data folder
        (see :func:`sdl_core.factory.load_model`).

        ``word_space``: ``"wordllama"``, a fastText ``.bin``/``.vec`` path, or a
        :class:`WordSpace`; it must be the space the model was trained in.
        """
        loaded = load_model(name_or_path, data_dir=data_dir, word_space=word_space)
        tagger = cls(loaded.model, loaded.vocabulary, loaded.word_space, device=device)
        tagger.source = loaded.source
        return tagger

    # -- tags of a request ----------------------------------------------------------
    def _request(self, extra_tags: Iterable[str], vocabulary: Vocabulary | None, only_extra: bool) -> _Request:
        typed = clean_tags(extra_tags)
        base = vocabulary if vocabulary is not None else self.vocabulary
        if only_extra:
            if not typed:
                raise TagInputError("no tags to rank: type at least one tag")
            base = Vocabulary([], np.zeros((0, self.config.d), np.float32), np.zeros(0, bool))
        if base.dim != self.config.d:
            raise WordSpaceError(f"vocabulary is {base.dim}-d but the model's word space is {self.config.d}-d")
        new = [t for t in typed if t not in base]
        vectors, found = self.word_space.embed(new) if new else (np.zeros((0, self.config.d), np.float32),
                                                                  np.zeros(0, bool))
        added = [t for t, f in zip(new, found) if f]
        missing = [t for t, f in zip(new, found) if not f]
        if not len(base) and not added:
            raise TagInputError("none of the typed tags has a word vector in the model's word space: "
                                f"{missing[:10]}")
        # built per request without re-validating the base vocabulary: this is the hot path
        tags = base.tags + added
        seen = np.concatenate([base.seen, np.array([self.vocabulary.is_seen(t) for t in added], dtype=bool)])
        typed_set = set(typed)
        typed_flags = np.array([t in typed_set for t in tags], dtype=bool)
        base_approx = np.zeros(len(base), bool) if base is self.vocabulary else self.word_space.approximate(base.tags)
        approximate = np.concatenate([base_approx, self.word_space.approximate(added)])
        rows = {t: i for i, t in enumerate(added, len(base))}
        typed_rows = [base.index(t) if t in base else rows[t] for t in typed if t in base or t in rows]
        base_tensor = self._vocab_tensor if base is self.vocabulary else torch.from_numpy(base.vectors).to(self.device)
        tensor = torch.cat([base_tensor, torch.from_numpy(vectors[found]).to(self.device)]) if added else base_tensor
        return _Request(tags, seen, typed_flags, missing, tensor, approximate, typed_rows,
                        self._request_evidence(base))

    def _request_evidence(self, base: Vocabulary) -> torch.Tensor | None:
        """The evidence matrix of a request's vocabulary (the model's own is built once)."""
        if self._gate <= 0:
            return None
        return self._evidence if base is self.vocabulary else evidence_matrix(base)

    # -- inference ------------------------------------------------------------------
    def encode(self, images: Sequence[Image.Image], with_maps: bool = False) -> Encoded:
        """Principal vectors for RGB images (already loaded with :func:`load_image`)."""
        return self._encode_pixels(to_tensor(list(images), self.config.preprocess), with_maps)

    @torch.inference_mode()
    def _encode_pixels(self, pixels: torch.Tensor, with_maps: bool = False) -> Encoded:
        model = self._runner.get()
        return model.encode(self._runner.prepare(pixels.to(self.device)), with_maps=with_maps)

    def _rank(self, scores: torch.Tensor, winners: torch.Tensor, req: _Request, top_k: int,
              image: str | None, hidden: torch.Tensor | None = None) -> tuple[ImageTags, list[int]]:
        """The top tags of one image, and their rows in the request (for their maps).
        A model whose config sets ``extra["max_tag_cosine"]`` shows no two near-equal tags;
        ``hidden`` (N,) tags are left out of a top-k (not of ``top_k=0``); scores are unchanged."""
        ranking = scores if hidden is None or top_k <= 0 else scores.masked_fill(hidden, float("-inf"))
        max_cosine = self.config.extra.get("max_tag_cosine")
        if max_cosine is None:
            order = top_k_indices(ranking, top_k).tolist()
        else:
            order = diverse_top_k(ranking, req.tag_tensor, top_k, float(max_cosine), req.typed)
        scores_l, winners_l = scores.tolist(), winners.tolist()
        tags = [TagResult(req.tags[i], float(scores_l[i]), bool(req.seen[i]), int(winners_l[i]),
                          bool(req.typed[i]), bool(req.approximate[i])) for i in order]
        typed = _typed_tags(req, scores, scores_l, winners_l, set(order))
        return ImageTags(tags, list(req.not_in_vocabulary), image, typed, len(req.tags)), order

    def tag(self, images: ImageSource | Sequence[ImageSource], extra_tags: Iterable[str] = (), top_k: int = 10,
            vocabulary: Vocabulary | None = None, only_extra: bool = False, batch_size: int = 16
            ) -> ImageTags | list[ImageTags]:
        """Rank tags for one image (returns :class:`ImageTags`) or a list of images
        (returns a list). ``top_k=0`` returns every tag. Bad images raise ImageError."""
        single = not isinstance(images, (list, tuple))
        sources = [images] if single else list(images)
        results = []
        for start in range(0, len(sources), max(1, batch_size)):
            chunk = sources[start:start + max(1, batch_size)]
            results += self._tag_loaded([load_image(s) for s in chunk], [_source_name(s) for s in chunk],
                                        extra_tags, top_k, vocabulary, only_extra)
        return results[0] if single else results

    def _tag_loaded(self, images: list[Image.Image], names: list[str | None], extra_tags: Iterable[str],
                    top_k: int, vocabulary: Vocabulary | None, only_extra: bool) -> list[ImageTags]:
        encoded = self._encode_pixels(to_tensor(images, self.config.preprocess))
        return self._tag_encoded(encoded, names, extra_tags, top_k, vocabulary, only_extra)

    def tag_encoded(self, encoded: Encoded, names: Sequence[str | None], extra_tags: Iterable[str] = (),
                    top_k: int = 10, vocabulary: Vocabulary | None = None, only_extra: bool = False
                    ) -> list[ImageTags]:
        """Rank tags for images already encoded (e.g. by :meth:`encode_files`): the model runs once."""
        return self._tag_encoded(encoded, list(names), extra_tags, top_k, vocabulary, only_extra)

    def _tag_encoded(self, encoded: Encoded, names: list[str | None], extra_tags: Iterable[str],
                     top_k: int, vocabulary: Vocabulary | None, only_extra: bool) -> list[ImageTags]:
        req = self._request(extra_tags, vocabulary, only_extra)
        scores, winners = score_tags(encoded.vectors, req.tag_tensor, self.config.reduction)
        hidden = unsupported(req.evidence, encoded, self._gate, req.typed)
        return [self._rank(scores[b], winners[b], req, top_k, names[b], None if hidden is None else hidden[b])[0]
                for b in range(len(names))]

    def _read_file(self, path: str) -> tuple[str, SDLError | None, np.ndarray | None]:
        """Decode and resize one file for the model (in a reader thread): (path, error or None,
        pixels or None). JPEGs decode at reduced scale while keeping DRAFT_MARGIN x the input."""
        cfg = self.config.preprocess
        try:
            return path, None, model_pixels(load_image(path, draft_side=DRAFT_MARGIN * cfg.size), cfg)
        except SDLError as exc:
            return path, exc, None

    def encode_files(self, paths: Sequence[str | Path], batch_size: int = 16
                     ) -> Iterator[tuple[list[tuple[str, SDLError | None]], Encoded | None]]:
        """Encode files batch by batch. Yields, per batch, each path with its error (None
        if it loaded) and the Encoded of the files that loaded, in that order (None if none did).

        READ_THREADS threads decode and resize the next READ_AHEAD batches while this one runs
        through the model (Pillow and ONNX Runtime release the GIL).
        """
        size = max(1, batch_size)
        todo = iter([str(p) for p in paths])
        with ThreadPoolExecutor(max_workers=READ_THREADS, thread_name_prefix="sdl-read") as pool:
            reads: deque[Future] = deque()
            try:
                reads.extend(pool.submit(self._read_file, p) for p in islice(todo, size * (READ_AHEAD + 1)))
                while reads:
                    batch = [reads.popleft().result() for _ in range(min(size, len(reads)))]
                    reads.extend(pool.submit(self._read_file, p) for p in islice(todo, size))
                    pixels = [array for _, _, array in batch if array is not None]
                    encoded = (self._encode_pixels(stack_pixels(pixels, self.config.preprocess))
                               if pixels else None)
                    yield [(path, error) for path, error, _ in batch], encoded
            finally:
                for read in reads:  # the caller stopped early: no work for files nobody waits for
                    read.cancel()

    def tag_files(self, paths: Sequence[str | Path], extra_tags: Iterable[str] = (), top_k: int = 10,
                  vocabulary: Vocabulary | None = None, only_extra: bool = False, batch_size: int = 16
                  ) -> Iterator[tuple[str, ImageTags | SDLError]]:
        """Tag many files in batches (read ahead, see :meth:`encode_files`), yielding in the
        order given; a bad file yields its error and the rest go on."""
        extra_tags = list(extra_tags)
        self._request(extra_tags, vocabulary, only_extra)  # tag errors surface before any image work
        for entries, encoded in self.encode_files(paths, batch_size):
            names = [path for path, error in entries if error is None]
            tagged = iter(self._tag_encoded(encoded, names, extra_tags, top_k, vocabulary, only_extra)
                          if encoded is not None else [])
            for path, error in entries:
                yield path, (error if error is not None else next(tagged))

    @torch.inference_mode()
    def analyze(self, image: ImageSource, extra_tags: Iterable[str] = (), top_k: int = 10,
                vocabulary: Vocabulary | None = None, only_extra: bool = False) -> Analysis:
        """Tags and exact attention maps in one forward pass (for the demo)."""
        img = load_image(image)
        req = self._request(extra_tags, vocabulary, only_extra)
        encoded = self.encode([img], with_maps=True)
        scores, winners = score_tags(encoded.vectors, req.tag_tensor, self.config.reduction)
        hidden = unsupported(req.evidence, encoded, self._gate, req.typed)
        result, shown = self._rank(scores[0], winners[0], req, top_k, _source_name(image),
                                   None if hidden is None else hidden[0])
        model = self._runner.get()
        per_tag = model.tag_maps(encoded, req.tag_tensor[shown])[0]  # (K, T, h, w)
        tag_maps = {t.tag: per_tag[:, j].float().cpu().numpy() for j, t in enumerate(result.tags)}
        principal_tags: list[list[str]] = [[] for _ in range(self.config.k)]
        for t in result.tags:
            principal_tags[t.principal].append(t.display)
        principal = model.principal_maps(encoded)[0].float().cpu().numpy()
        return Analysis(result, img, principal, tag_maps, principal_tags)


def _typed_tags(req: _Request, scores: torch.Tensor, scores_l: list[float], winners_l: list[int],
                shown: set[int]) -> list[TypedTag]:
    """Each typed tag's result with its rank, from the scores already computed."""
    ranks = ranks_of(scores, req.typed_rows)
    return [TypedTag(req.tags[i], float(scores_l[i]), bool(req.seen[i]), int(winners_l[i]),
                     approximate=bool(req.approximate[i]), rank=rank, in_top_k=i in shown)
            for i, rank in zip(req.typed_rows, ranks)]


def _source_name(source: ImageSource) -> str | None:
    if isinstance(source, (str, Path)):
        return str(source)
    return getattr(source, "filename", None) or None
