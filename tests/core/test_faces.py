"""The face detector behind the default model's "person" evidence (sdl_core.faces, sdl_core.evidence):
it finds real faces and nothing on photos without people, agrees with the wheel's own MTCNN,
and feeds the person channel (score, heat map, search) without changing any other tag's score."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from sdl_core import Tagger
from sdl_core.colour import FULL_SCORE
from sdl_core.config import WordSpaceInfo
from sdl_core.errors import CheckpointError
from sdl_core.evidence import LAYOUTS, EvidenceSpace, channel_name, evidence_info, packaged_space
from sdl_core.faces import Face, detect_faces, face_score, person_evidence, weights_folder
from sdl_core.search import query_space, search, update_index
from sdl_core.wordvec import WORDLLAMA

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "demo" / "examples"
ASTRONAUT = EXAMPLES / "astronaut.jpg"  # scikit-image's portrait of Eileen Collins
NO_PEOPLE = [EXAMPLES / "coffee.jpg", EXAMPLES / "rocket.jpg", EXAMPLES / "chelsea.jpg"]


def _input(path: Path, size: int = 224) -> torch.Tensor:
    """The default model's view of a photo: squashed to 224 x 224, RGB in [0, 1]."""
    img = Image.open(path).convert("RGB").resize((size, size), Image.BICUBIC)
    return torch.from_numpy(np.array(img, dtype=np.float32) / 255.0).permute(2, 0, 1)[None]


@pytest.fixture(scope="module")
def tagger() -> Tagger:
    return Tagger.from_pretrained()


def test_finds_the_astronauts_face():
    faces = detect_faces(_input(ASTRONAUT))[0]
    assert len(faces) == 1, faces
    x1, y1, x2, y2 = faces[0].box
    assert faces[0].probability > 0.99
    # her face: about x 80-116, y 28-76 of the 224 x 224 input (the photo is 512 x 512)
    assert 65 < (x1 + x2) / 2 < 110 and 35 < (y1 + y2) / 2 < 70 and 25 < x2 - x1 < 60, faces[0]


@pytest.mark.parametrize("path", NO_PEOPLE, ids=lambda p: p.name)
def test_no_face_where_there_is_none(path):
    assert detect_faces(_input(path)) == [[]]


def test_plain_and_noise_images_have_no_face():
    torch.manual_seed(0)
    batch = torch.cat([torch.full((1, 3, 224, 224), 0.5), torch.rand(1, 3, 224, 224)])
    assert detect_faces(batch) == [[], []]


def test_a_batch_finds_what_each_photo_finds_alone():
    """Folder tagging detects a batch at once: the same faces, each in its own photo."""
    photos = [NO_PEOPLE[0], ASTRONAUT, NO_PEOPLE[1], ASTRONAUT]
    batch = detect_faces(torch.cat([_input(p) for p in photos]))
    alone = [detect_faces(_input(p))[0] for p in photos]
    assert [len(f) for f in batch] == [0, 1, 0, 1]
    for got, want in zip(batch, alone):
        assert [f.probability for f in got] == pytest.approx([f.probability for f in want], abs=1e-5)
        assert all(np.allclose(g.box, w.box, atol=1e-3) for g, w in zip(got, want))


def test_agrees_with_the_wheels_own_mtcnn():
    """The same networks and cascade as facenet-pytorch's MTCNN (the reference implementation)."""
    pytest.importorskip("torchvision")
    from facenet_pytorch import MTCNN
    reference = MTCNN(keep_all=True, min_face_size=27, device="cpu")
    pixels = _input(ASTRONAUT)
    boxes, probs = reference.detect(Image.fromarray((pixels[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)))
    ours = detect_faces(pixels)[0]
    assert len(ours) == len(boxes) == 1
    assert ours[0].probability == pytest.approx(float(probs[0]), abs=0.01)
    theirs = np.asarray(boxes[0], dtype=np.float64)
    assert np.allclose(ours[0].box, theirs, atol=5), (ours[0].box, theirs)


def test_face_score_and_cells():
    assert face_score(0.5) == 0 and face_score(0.9) == 0
    assert face_score(0.999) == pytest.approx(FULL_SCORE)
    faces = [[Face((0.0, 0.0, 112.0, 112.0), 0.999)], []]
    scores, cells = person_evidence(faces, (224, 224), (4, 4))
    assert scores.tolist() == pytest.approx([FULL_SCORE, 0.0])
    assert cells[0, :2, :2].min() == pytest.approx(FULL_SCORE)  # the face's quarter, fully covered
    assert cells[0, 2:, :].max() == 0 and cells[0, :, 2:].max() == 0 and cells[1].max() == 0


def test_person_words_read_the_channel(tagger):
    assert channel_name("Person") == channel_name("face") == channel_name("human") == "person"
    assert channel_name("man") is None and channel_name("people") is None  # a face tells neither
    space = tagger.word_space
    assert isinstance(space, EvidenceSpace)
    person = space.dim - 1
    vectors, found = space.embed(["person", "face", "lake"])
    assert found.all() and vectors[0, person] == 1 and vectors[1, person] == 1 and vectors[2, person] == 0
    assert "face" not in tagger.vocabulary and "person" in tagger.vocabulary  # listed once, by its own name


def test_older_colour_only_spaces_still_load():
    old = WordSpaceInfo(WORDLLAMA.name + "+colour13", WORDLLAMA.dim + 13)
    assert evidence_info(WORDLLAMA, "+colour13") == old
    space = packaged_space(old)
    assert isinstance(space, EvidenceSpace) and space.dim == old.dim and "person" not in space.channels
    assert set(LAYOUTS) == {"+colour13", "+colour13+person1"}


def test_portrait_is_tagged_person_with_a_map_on_the_face(tagger):
    analysis = tagger.analyze(str(ASTRONAUT), top_k=5)
    top = {t.tag: t for t in analysis.tags}
    assert "person" in top and top["person"].score == pytest.approx(FULL_SCORE, abs=0.01), list(top)
    face_map = analysis.tag_maps["person"][0]
    row, col = np.unravel_index(face_map.argmax(), face_map.shape)
    h, w = face_map.shape
    assert row < h / 2 and 0 < col < w - 1 and face_map[:, -1].max() == 0, face_map  # upper middle: her face


def test_other_photos_score_person_zero(tagger):
    result = tagger.tag(str(NO_PEOPLE[0]), extra_tags=["person"], top_k=3)
    assert result.typed[0].score == 0 and not result.typed[0].in_top_k


def test_search_finds_the_photo_with_a_person(tagger, tmp_path):
    for path in [ASTRONAUT, *NO_PEOPLE]:
        (tmp_path / path.name).write_bytes(path.read_bytes())
    index, _ = update_index(tmp_path, tagger)
    result = search(index, ["person"], query_space(index))
    assert Path(result.hits[0].path).name == ASTRONAUT.name
    assert result.hits[0].score > result.hits[1].score + 0.3


def test_missing_weights_say_how_to_install(monkeypatch):
    import importlib.util
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(CheckpointError, match="pip install facenet-pytorch"):
        weights_folder()
