"""Getting the user's music onto local disk as one folder per genre (paper sections 2.1 and 4.1).

Paper 4.1: reading the data from a mounted Google Drive was far too slow, so the data were uploaded
to Drive compressed and decompressed onto the virtual machine. This module does that step.

``fetch(source, dest)`` accepts

* a Google Drive file or folder link, or a bare file id: downloaded into ``dest`` with ``gdown``;
* a local or mounted-Drive archive (.zip .tar .tar.gz .tgz .tar.xz .tar.bz2): copied to ``dest``
  first (reading a mounted Drive member by member is slow), then extracted next to the copy;
* a local folder: used in place.

and returns the data root, the folder whose sub-folders are the genres (``find_data_root`` steps
through wrapper folders such as ``music.zip -> music/``). An extraction is reused while the archive
copy is unchanged.

Extraction is safe: every member is checked before anything is written, and an archive with an
entry that would land outside the destination (``../``, absolute paths, links pointing outside or
paths through an archived symlink, device files) is refused with :class:`UnsafeArchiveError`
naming the entry. Tar extraction also uses tarfile's ``filter="data"`` where Python has it.
"""
from __future__ import annotations

import os
import posixpath
import re
import shutil
import tarfile
import zipfile
from pathlib import Path
from typing import Callable
from urllib.parse import parse_qs, urlparse

from ..errors import FetchError, UnsafeArchiveError
from ..utils.progress import progress_bar
from .decode import AUDIO_EXTENSIONS

ARCHIVE_SUFFIXES = (".tar.gz", ".tar.xz", ".tar.bz2", ".tgz", ".txz", ".tbz2", ".tar", ".zip")
_DRIVE_ID = re.compile(r"[A-Za-z0-9_-]{20,}")
_IGNORED = ("__MACOSX",)  # macOS zip resource forks; names starting with "." are ignored too


def parse_drive_id(source: str) -> str | None:
    """Google Drive id from a share link (``/file/d/ID/``, ``/drive/folders/ID``, ``open?id=ID``,
    ``uc?id=ID``) or a bare id; ``None`` when ``source`` is neither."""
    source = source.strip()
    if "://" not in source and not source.startswith(("drive.google.", "docs.google.")):
        return source if _DRIVE_ID.fullmatch(source) else None
    url = urlparse(source if "://" in source else "https://" + source)
    if not (url.hostname or "").endswith("google.com"):
        return None
    m = re.search(r"/(?:file/d|folders|d)/([A-Za-z0-9_-]+)", url.path)
    ids = [m.group(1)] if m else parse_qs(url.query).get("id", [])
    return ids[0] if ids and _DRIVE_ID.fullmatch(ids[0]) else None


def _gdown(source: str, file_id: str, folder: Path, progress: bool) -> Path:
    """Download a Drive file (or folder) into ``folder``; returns the file (folder) written."""
    import gdown

    if "/folders/" in source:
        out = folder / file_id
        if not gdown.download_folder(id=file_id, output=str(out), quiet=not progress):
            raise RuntimeError("gdown downloaded no files")
        return out
    path = gdown.download(id=file_id, output=str(folder) + os.sep, quiet=not progress)
    if not path:
        raise RuntimeError("gdown returned no file")
    return Path(path)


def fetch(source: str | os.PathLike, dest: str | os.PathLike, progress: bool = True,
          download: Callable[[str, str, Path, bool], Path] | None = None) -> Path:
    """Make ``source`` available under ``dest`` and return the data root (a folder of genre folders).

    ``download(source, file_id, folder, progress) -> path`` fetches Drive files (default: gdown).
    Raises :class:`FetchError` / :class:`UnsafeArchiveError` with what to do.
    """
    dest, path = Path(dest), Path(os.fspath(source)).expanduser()
    if path.is_dir():
        return find_data_root(path)
    if path.is_file():
        archive = _copy(path, dest, progress)
    elif (file_id := parse_drive_id(str(source))) is not None:
        folder = dest / "download"
        folder.mkdir(parents=True, exist_ok=True)
        try:
            archive = (download or _gdown)(str(source), file_id, folder, progress)
        except Exception as e:  # gdown raises requests/gdown/OS errors of many kinds
            local = "" if "google." in str(source) else f" ({str(source)!r} is no local file or folder either)"
            raise FetchError(
                f"could not download Google Drive file {file_id!r}{local}: {type(e).__name__}: {e}. Check that you "
                "are online and the file is shared as 'Anyone with the link', or download it yourself and pass the "
                "archive's path (a mounted Drive path such as /content/drive/MyDrive/music.zip works).") from None
        if Path(archive).is_dir():
            return find_data_root(archive)
    else:
        raise FetchError(f"{source}: no such file or folder, and not a Google Drive link or id. Pass a folder "
                         "of genre folders, an archive of one, or a Drive share link.")
    return find_data_root(_extract_once(Path(archive), dest, progress))


def _copy(src: Path, dest: Path, progress: bool) -> Path:
    """Copy ``src`` into ``dest`` (skipped when an identical-looking copy is there); returns the copy."""
    if _kind(src) is None:
        raise FetchError(f"{src}: not a folder or a {'/'.join(ARCHIVE_SUFFIXES)} archive.")
    dest.mkdir(parents=True, exist_ok=True)
    out, st = dest / src.name, src.stat()
    if out.exists() and out.samefile(src):
        return out
    if out.is_file() and (out.stat().st_size, out.stat().st_mtime_ns) == (st.st_size, st.st_mtime_ns):
        return out
    tmp = out.with_name(out.name + ".partial")
    with open(src, "rb") as r, open(tmp, "wb") as w, progress_bar(
            total=st.st_size, unit="B", unit_scale=True, desc=f"copy {src.name}", disable=not progress) as bar:
        while chunk := r.read(1 << 22):
            w.write(chunk)
            bar.update(len(chunk))
    shutil.copystat(src, tmp)
    os.replace(tmp, out)
    return out


def _extract_once(archive: Path, dest: Path, progress: bool) -> Path:
    """Extract into ``dest/<archive stem>``, reusing an earlier extraction of the same archive copy."""
    name = archive.name
    stem = next((name[: -len(s)] for s in ARCHIVE_SUFFIXES if name.lower().endswith(s)), name + "_files")
    out, stamp_file = dest / stem, dest / f".{stem}.extracted"
    stamp = f"{archive.stat().st_size} {archive.stat().st_mtime_ns}"
    if out.is_dir() and stamp_file.is_file() and stamp_file.read_text() == stamp:
        return out
    tmp = dest / f"{stem}.partial"
    for old in (tmp, out):
        shutil.rmtree(old, ignore_errors=True)
    safe_extract(archive, tmp, progress)
    os.replace(tmp, out)
    stamp_file.write_text(stamp)
    return out


def _kind(archive: Path) -> str | None:
    """"zip" or "tar" by content, else by name (so a truncated archive gets a "corrupt" message)."""
    if zipfile.is_zipfile(archive):
        return "zip"
    try:
        if tarfile.is_tarfile(archive):
            return "tar"
    except Exception:  # noqa: BLE001 - a sniff; corrupt compressed streams raise all sorts
        pass
    name = archive.name.lower()
    return "zip" if name.endswith(".zip") else "tar" if name.endswith(ARCHIVE_SUFFIXES) else None


def _resolve(archive: Path, entry: str, path: str, base: list[str], links: set[str],
             last_may_be_link: bool) -> list[str]:
    """Components of ``path`` (relative to ``base``) inside the destination, or UnsafeArchiveError."""
    def unsafe(why: str) -> UnsafeArchiveError:
        return UnsafeArchiveError(f"{archive}: refusing to extract entry {entry!r}: {why}. Nothing was extracted; "
                                  "the archive may be malicious, re-create it from the genre folders.")
    if not path or path.startswith(("/", "\\")) or re.match(r"[A-Za-z]:", path):
        raise unsafe(f"absolute path {path!r}")
    parts = [p for p in re.split(r"[\\/]+", path) if p not in ("", ".")]
    stack = list(base)
    for i, part in enumerate(parts):
        if part == "..":
            if not stack:
                raise unsafe(f"{path!r} points outside the destination")
            stack.pop()
        else:
            stack.append(part)
        if "/".join(stack) in links and (i < len(parts) - 1 or not last_may_be_link):
            raise unsafe(f"{path!r} goes through the archived symlink {'/'.join(stack)!r}")
    return stack


def _norm(name: str) -> str:
    """Lexical form of an entry name, as _resolve's component stack spells it."""
    return posixpath.normpath(name.replace("\\", "/")).strip("/")


def _check_members(archive: Path, members: list[tuple[str, str, str]]) -> None:
    """Validate ``(name, kind, link_target)`` for every member before anything is written.

    kind is "file", "dir", "symlink", "hardlink" or "other" (devices, fifos: always refused).
    """
    links = {_norm(n) for n, k, _ in members if k == "symlink"}
    files = {_norm(n) for n, k, _ in members if k == "file"}
    for name, kind, target in members:
        parts = _resolve(archive, name, name, [], links, last_may_be_link=True)
        if kind == "other":
            raise UnsafeArchiveError(f"{archive}: refusing to extract entry {name!r}: it is a device or fifo, "
                                     "not a file.")
        if kind == "symlink":
            _resolve(archive, name, target, parts[:-1], links, last_may_be_link=True)
        elif kind == "hardlink" and "/".join(_resolve(archive, name, target, [], links, False)) not in files:
            raise UnsafeArchiveError(f"{archive}: refusing to extract entry {name!r}: hard link to {target!r}, "
                                     "which is not a file in the archive.")


def safe_extract(archive: str | os.PathLike, dest: str | os.PathLike, progress: bool = False) -> Path:
    """Extract a zip/tar archive into ``dest`` (created) after validating every member; returns ``dest``."""
    archive, dest = Path(archive), Path(dest)
    kind = _kind(archive)
    if kind is None:
        raise FetchError(f"{archive}: not a zip or tar archive (supported: {' '.join(ARCHIVE_SUFFIXES)}).")
    try:
        if kind == "zip":
            _extract_zip(archive, dest, progress)
        else:
            _extract_tar(archive, dest, progress)
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, OSError, RuntimeError) as e:
        if isinstance(e, getattr(tarfile, "FilterError", ())):
            raise UnsafeArchiveError(f"{archive}: refusing to extract: {e}.") from None
        raise FetchError(f"{archive}: cannot extract ({type(e).__name__}: {e}); the archive may be truncated or "
                         "corrupt (copy or download it again), or the disk may be full.") from None
    return dest


def _tar_kind(m: tarfile.TarInfo) -> str:
    return ("file" if m.isreg() else "dir" if m.isdir() else "symlink" if m.issym()
            else "hardlink" if m.islnk() else "other")


def _extract_tar(archive: Path, dest: Path, progress: bool) -> None:
    with tarfile.open(archive, "r:*") as tf:
        members = tf.getmembers()
        _check_members(archive, [(m.name, _tar_kind(m), m.linkname) for m in members])
        dest.mkdir(parents=True, exist_ok=True)
        extra = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}  # 3.12+, 3.11.4+ backport
        members = progress_bar(members, desc=f"extract {archive.name}", disable=not progress)
        tf.extractall(dest, members=members, **extra)


def _zip_symlink(info: zipfile.ZipInfo) -> bool:
    return (info.external_attr >> 16) & 0o170000 == 0o120000


def _extract_zip(archive: Path, dest: Path, progress: bool) -> None:
    with zipfile.ZipFile(archive) as zf:
        infos = zf.infolist()
        targets = {i.filename: zf.read(i).decode("utf-8", "replace") for i in infos if _zip_symlink(i)}
        _check_members(archive, [(i.filename, "symlink" if i.filename in targets else "dir" if i.is_dir() else "file",
                                  targets.get(i.filename, "")) for i in infos])
        dest.mkdir(parents=True, exist_ok=True)
        for info in progress_bar(infos, desc=f"extract {archive.name}", disable=not progress):
            if info.filename in targets:  # zipfile would write the link target as a text file
                link = dest / info.filename
                link.parent.mkdir(parents=True, exist_ok=True)
                os.symlink(targets[info.filename], link)
            else:
                zf.extract(info, dest)


def _visible(p: Path) -> bool:
    return not p.name.startswith(".") and p.name not in _IGNORED


def find_data_root(folder: str | os.PathLike) -> Path:
    """Descend through single wrapper folders (no audio next to them) to the folder of genre folders.

    ``x/music/{classical,edm}/...`` -> ``x/music``. A folder whose only sub-folder holds audio and no
    further folders is a one-genre data root and is returned as is.
    """
    root = Path(folder)
    if not root.is_dir():
        raise FetchError(f"{root}: not a folder")
    while True:
        entries = [p for p in root.iterdir() if _visible(p)]
        dirs = [p for p in entries if p.is_dir()]
        audio_here = any(p.suffix.lower() in AUDIO_EXTENSIONS for p in entries if p.is_file())
        if len(dirs) == 1 and not audio_here and any(_visible(q) and q.is_dir() for q in dirs[0].iterdir()):
            root = dirs[0]
            continue
        if not dirs:
            raise FetchError(f"{folder}: no genre folders found. Expected one sub-folder per genre holding its audio "
                             "files, e.g. music/classical/a.flac, music/edm/b.mp3.")
        return root
