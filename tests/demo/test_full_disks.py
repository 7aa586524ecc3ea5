"""The demo's JSON downloads on a full or read-only disk: the tags are still shown, without
a download, and the page says why; nothing half-written is left (a small real tmpfs;
skipped with the reason where it cannot be mounted)."""
from __future__ import annotations

import pytest
from gradio_client import Client, handle_file

from benchmarks.soak_clients import shown_rows
from demo.app import build_app, launch
from demo.render import write_json
from sdl_core.errors import StorageError
from tests.conftest import make_photo
from tests.demo.conftest import free_port
from tests.disks import fill, leftovers, read_only, small_disk


@pytest.mark.parametrize("trouble", ["full", "read-only"])
def test_write_json_whole_or_nothing(tmp_path, trouble) -> None:
    with small_disk(tmp_path / "disk", "256k") as disk:
        root = disk / "json"
        first = write_json({"n": 1}, root, "a.json")
        fill(disk) if trouble == "full" else read_only(disk)
        reason = "the disk is full" if trouble == "full" else "read-only"
        with pytest.raises(StorageError, match=f"cannot write the JSON download.*{reason}"):
            write_json({"n": 2, "pad": "x" * 10_000}, root, "b.json")
        assert [p.name for p in root.rglob("*.json")] == ["a.json"] and first.read_text() == '{\n  "n": 1\n}'
        assert len(list(root.iterdir())) == 1 and leftovers(disk) == []


def test_tags_still_shown_when_the_download_cannot_be_saved(tmp_path, toy_checkpoint, models_dir) -> None:
    photo = tmp_path / "p.jpg"
    make_photo().save(photo)
    with small_disk(tmp_path / "disk", "512k") as disk:
        app = build_app(str(toy_checkpoint), models_dir, json_root=disk / "json")
        _, url, _ = launch(app, port=free_port(), prevent_thread_lock=True, quiet=True)
        try:
            fill(disk)
            client = Client(url, verbose=False, download_files=str(tmp_path / "downloads"))
            table, json_file, maps, *_ = client.predict(handle_file(str(photo)), "cat", False, 5,
                                                               str(toy_checkpoint.resolve()), api_name="/tag")
            assert shown_rows(table) == 5 and maps and json_file is None
            assert not list((disk / "json").rglob("*.json")) and leftovers(disk) == []
        finally:
            app.close()
