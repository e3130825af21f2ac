"""The one atomic writer (nmusic/utils/files.py): a file is the old one or the new one, never half of either."""
import os

import pytest

from nmusic.utils.files import atomic_copy, atomic_write, atomic_write_json, atomic_write_text, read_json


def test_failed_write_leaves_the_old_file_intact(tmp_path):
    target = tmp_path / "ckpt-00000001.pt"
    atomic_write_text(target, "the old file")
    before = target.read_bytes()

    def explode(f):
        f.write(b"half a checkpoint")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(target, explode)
    assert target.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["ckpt-00000001.pt"]


def test_copy_is_a_hard_link_where_possible_else_bytes(tmp_path, monkeypatch):
    src = atomic_write_json(tmp_path / "a.json", {"x": 1})
    atomic_copy(src, tmp_path / "b.json")
    assert os.path.samefile(src, tmp_path / "b.json") and read_json(tmp_path / "b.json") == {"x": 1}

    def no_links(*_):
        raise OSError("no hard links on this file system (mounted Drive)")
    monkeypatch.setattr(os, "link", no_links)
    atomic_copy(src, tmp_path / "c.json")
    assert not os.path.samefile(src, tmp_path / "c.json") and read_json(tmp_path / "c.json") == {"x": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "b.json", "c.json"]   # no temporaries left


def test_read_json_of_a_missing_or_broken_file_is_empty(tmp_path):
    assert read_json(tmp_path / "missing.json") == {}
    (tmp_path / "bad.json").write_text("{half")
    assert read_json(tmp_path / "bad.json") == {}
