"""nmusic.data.fetch: Drive ids, local/mounted archives, safe extraction, data-root discovery."""
import io
import os
import tarfile
import time
import zipfile
from pathlib import Path

import pytest

from nmusic.data.fetch import fetch, find_data_root, parse_drive_id, safe_extract
from nmusic.errors import FetchError, UnsafeArchiveError

ID = "1AbCdEfGhIjKlMnOpQrStUvWxYz0123456"
FILES = {"music/classical/a.wav": b"RIFF-a", "music/classical/op1/b.flac": b"fLaC-b", "music/edm/c.mp3": b"ID3-c"}


@pytest.mark.parametrize("source,expected", [
    (f"https://drive.google.com/file/d/{ID}/view?usp=sharing", ID),
    (f"https://drive.google.com/file/d/{ID}", ID),
    (f"https://drive.google.com/open?id={ID}", ID),
    (f"https://drive.google.com/uc?id={ID}&export=download", ID),
    (f"https://docs.google.com/uc?export=download&id={ID}", ID),
    (f"drive.google.com/file/d/{ID}/view", ID),
    (f"https://drive.google.com/drive/folders/{ID}?usp=sharing", ID),
    (f"  {ID}\n", ID),
    (f"https://example.com/file/d/{ID}/view", None),
    ("https://drive.google.com/file/d/short/view", None),
    ("data/music.zip", None),
    ("/content/drive/MyDrive/music.zip", None),
    ("music", None),
])
def test_parse_drive_id(source, expected):
    assert parse_drive_id(source) == expected


def write_archive(path: Path, files=FILES, fmt=None):
    """A zip or tar (compression from the name) holding ``files`` {name: bytes}."""
    if path.name.endswith(".zip"):
        with zipfile.ZipFile(path, "w") as zf:
            for name, data in files.items():
                zf.writestr(name, data)
            zf.writestr("__MACOSX/music/._a.wav", b"junk")
        return path
    mode = {"gz": "w:gz", "tgz": "w:gz", "xz": "w:xz", "bz2": "w:bz2"}.get(path.name.rsplit(".", 1)[-1], "w")
    with tarfile.open(path, mode) as tf:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return path


def tree(root: Path) -> dict:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("ext", ["zip", "tar", "tar.gz", "tgz", "tar.xz", "tar.bz2"])
def test_fetch_local_archive_copies_then_extracts(tmp_path, ext):
    drive = tmp_path / "drive"  # stands for a mounted Drive folder
    drive.mkdir()
    archive = write_archive(drive / f"music.{ext}")
    root = fetch(archive, tmp_path / "data", progress=False)
    assert (tmp_path / "data" / archive.name).read_bytes() == archive.read_bytes()  # local copy first
    assert root == tmp_path / "data" / "music" / "music"
    assert tree(root) == {k.removeprefix("music/"): v for k, v in FILES.items()}
    assert sorted(p.name for p in tmp_path.rglob("*.partial")) == []


def test_fetch_reuses_extraction_until_archive_changes(tmp_path):
    archive = write_archive(tmp_path / "music.tar.gz")
    root = fetch(archive, tmp_path / "data", progress=False)
    (root / "marker").write_text("still here")
    assert fetch(archive, tmp_path / "data", progress=False) == root and (root / "marker").exists()
    write_archive(archive, {**FILES, "music/lofi/d.ogg": b"OggS-d"})
    os.utime(archive, ns=(time.time_ns(), time.time_ns() + 10**9))
    root = fetch(archive, tmp_path / "data", progress=False)
    assert not (root / "marker").exists() and (root / "lofi" / "d.ogg").read_bytes() == b"OggS-d"


def test_fetch_folder_is_used_in_place(tmp_path):
    for name, data in FILES.items():
        (tmp_path / "src" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "src" / name).write_bytes(data)
    assert fetch(tmp_path / "src", tmp_path / "data", progress=False) == tmp_path / "src" / "music"
    assert not (tmp_path / "data").exists()


def test_fetch_drive_with_injected_download(tmp_path):
    src = write_archive(tmp_path / "music.zip")
    calls = []

    def download(source, file_id, folder, progress):
        calls.append(file_id)
        (folder / "music.zip").write_bytes(src.read_bytes())
        return folder / "music.zip"

    root = fetch(f"https://drive.google.com/file/d/{ID}/view", tmp_path / "data", False, download)
    assert calls == [ID] and sorted(p.name for p in root.iterdir()) == ["classical", "edm"]

    def offline(source, file_id, folder, progress):
        raise ConnectionError("Name or service not known")

    with pytest.raises(FetchError, match=f"{ID}.*no local file.*ConnectionError.*Anyone with the link"):
        fetch(ID, tmp_path / "data2", False, offline)


def test_fetch_drive_with_real_gdown_fails_fast_offline(tmp_path, monkeypatch):
    for var in ("HTTPS_PROXY", "HTTP_PROXY", "https_proxy", "http_proxy"):  # refused at once, never the internet
        monkeypatch.setenv(var, "http://127.0.0.1:9")
    monkeypatch.setenv("NO_PROXY", "")
    monkeypatch.setenv("no_proxy", "")
    start = time.perf_counter()
    with pytest.raises(FetchError, match="could not download Google Drive file"):
        fetch(f"https://drive.google.com/uc?id={ID}", tmp_path / "data", progress=False)
    assert time.perf_counter() - start < 10


def test_fetch_bad_sources(tmp_path):
    with pytest.raises(FetchError, match="no such file or folder"):
        fetch(tmp_path / "missing.zip", tmp_path / "data", progress=False)
    (tmp_path / "song.wav").write_bytes(b"RIFF....WAVE")
    with pytest.raises(FetchError, match="not a folder or a"):
        fetch(tmp_path / "song.wav", tmp_path / "data", progress=False)
    for ext in ("tar.gz", "zip"):
        good = write_archive(tmp_path / f"good.{ext}", {f"music/g/{i}.wav": os.urandom(5000) for i in range(4)})
        cut = tmp_path / f"cut.{ext}"
        cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
        with pytest.raises(FetchError, match="corrupt"):
            fetch(cut, tmp_path / f"data-{ext}", progress=False)
    empty = write_archive(tmp_path / "empty.tar", {"readme.txt": b"hi"})
    with pytest.raises(FetchError, match="no genre folders"):
        fetch(empty, tmp_path / "data", progress=False)


def tar_with(path: Path, entries):
    """entries: (name, type, linkname); regular files get a few bytes. "ok/first.txt" comes first."""
    with tarfile.open(path, "w:gz") as tf:
        for name, kind, link in [("ok/first.txt", tarfile.REGTYPE, "")] + entries:
            info = tarfile.TarInfo(name)
            info.type, info.linkname = kind, link
            data = b"evil" if kind == tarfile.REGTYPE else b""
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return path


MALICIOUS_TAR = {
    "dotdot": ([("../evil.txt", tarfile.REGTYPE, "")], "../evil.txt"),
    "deep-dotdot": ([("ok/../../evil.txt", tarfile.REGTYPE, "")], "ok/../../evil.txt"),
    "absolute": ([("ABS/evil.txt", tarfile.REGTYPE, "")], "ABS/evil.txt"),
    "symlink-out": ([("link", tarfile.SYMTYPE, "../outside")], "link"),
    "symlink-abs": ([("etc", tarfile.SYMTYPE, "/etc")], "etc"),
    "hardlink-out": ([("hl", tarfile.LNKTYPE, "../outside.txt")], "hl"),
    "hardlink-abs": ([("hl", tarfile.LNKTYPE, "/etc/passwd")], "hl"),
    "link-chain": ([("d", tarfile.SYMTYPE, "."), ("e", tarfile.SYMTYPE, "d/..")], "e"),
    "write-through-link": ([("lnk", tarfile.SYMTYPE, "ok"), ("lnk/x.txt", tarfile.REGTYPE, "")], "lnk/x.txt"),
    "fifo": ([("pipe", tarfile.FIFOTYPE, "")], "pipe"),
}


@pytest.mark.parametrize("case", sorted(MALICIOUS_TAR))
def test_malicious_tar_is_refused_before_writing_anything(tmp_path, case):
    entries, bad = MALICIOUS_TAR[case]
    absolute = str(tmp_path / "abs_evil.txt").lstrip("/")
    entries = [(n.replace("ABS/evil.txt", "/" + absolute), k, l) for n, k, l in entries]
    bad = bad.replace("ABS/evil.txt", "/" + absolute)
    archive = tar_with(tmp_path / "evil.tar.gz", entries)
    dest = tmp_path / "a" / "b" / "dest"
    dest.parent.mkdir(parents=True)
    with pytest.raises(UnsafeArchiveError) as e:
        safe_extract(archive, dest)
    assert repr(bad) in str(e.value)
    assert not dest.exists()
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["a", "b", "evil.tar.gz"]


def test_malicious_archive_through_fetch_leaves_only_the_copy(tmp_path):
    archive = tar_with(tmp_path / "evil.tar.gz", [("music/../../../evil.txt", tarfile.REGTYPE, "")])
    with pytest.raises(UnsafeArchiveError, match="music/../../../evil.txt"):
        fetch(archive, tmp_path / "data", progress=False)
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == ["evil.tar.gz"]
    assert not list(tmp_path.rglob("evil.txt"))


@pytest.mark.parametrize("name,symlink_target", [
    ("../evil.txt", None), ("/abs_evil.txt", None), ("..\\evil.txt", None), ("ok/../../evil.txt", None),
    ("link", "../outside"), ("link", "/etc/passwd"),
])
def test_malicious_zip_is_refused(tmp_path, name, symlink_target):
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("ok/first.txt", b"fine")
        info = zipfile.ZipInfo(name)
        if symlink_target:
            info.external_attr = 0o120777 << 16
        zf.writestr(info, symlink_target or "evil")
    dest = tmp_path / "x" / "dest"
    dest.parent.mkdir()
    with pytest.raises(UnsafeArchiveError, match="refusing to extract entry") as e:
        safe_extract(archive, dest)
    assert repr(name) in str(e.value) and not dest.exists()
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["evil.zip", "x"]


def test_links_inside_the_archive_are_kept(tmp_path):
    archive = tmp_path / "ok.tar"
    with tarfile.open(archive, "w") as tf:
        for name, kind, link in [("music/edm/a.wav", tarfile.REGTYPE, ""),
                                 ("music/edm/alias.wav", tarfile.SYMTYPE, "a.wav"),
                                 ("music/lofi", tarfile.SYMTYPE, "edm"),
                                 ("music/edm/hard.wav", tarfile.LNKTYPE, "music/edm/a.wav")]:
            info = tarfile.TarInfo(name)
            info.type, info.linkname, info.size = kind, link, 4 if kind == tarfile.REGTYPE else 0
            tf.addfile(info, io.BytesIO(b"RIFF"))
    out = safe_extract(archive, tmp_path / "out")
    assert (out / "music/edm/alias.wav").is_symlink() and (out / "music/edm/alias.wav").read_bytes() == b"RIFF"
    assert (out / "music/edm/hard.wav").read_bytes() == b"RIFF" and (out / "music/lofi/a.wav").exists()
    zarchive = tmp_path / "ok.zip"
    with zipfile.ZipFile(zarchive, "w") as zf:
        zf.writestr("music/edm/a.wav", b"RIFF")
        info = zipfile.ZipInfo("music/edm/alias.wav")
        info.external_attr = 0o120777 << 16
        zf.writestr(info, "a.wav")
    out = safe_extract(zarchive, tmp_path / "zout")
    assert (out / "music/edm/alias.wav").is_symlink() and (out / "music/edm/alias.wav").read_bytes() == b"RIFF"


def test_find_data_root(tmp_path):
    for rel in ("w/x/music/classical/a.wav", "w/x/music/edm/sub/b.wav", "w/x/.DS_Store", "w/__MACOSX/._a"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"x")
    assert find_data_root(tmp_path / "w") == tmp_path / "w/x/music"
    assert find_data_root(tmp_path / "w/x/music/edm") == tmp_path / "w/x/music/edm"  # one genre with a sub-folder
    (tmp_path / "one/classical").mkdir(parents=True)
    (tmp_path / "one/classical/a.wav").write_bytes(b"x")
    assert find_data_root(tmp_path / "one") == tmp_path / "one"  # a single genre is not a wrapper
    with pytest.raises(FetchError, match="no genre folders"):
        find_data_root(tmp_path / "one/classical")
    with pytest.raises(FetchError, match="not a folder"):
        find_data_root(tmp_path / "nope")
