"""Unpacking an LMS download safely.

nbgrader's ``ExtractorPlugin`` unpacks with ``nbgrader.utils.unzip``, which skips entries
that escape the folder without saying so, has no size limit, and unpacks zips in zips
until none is left. ``SafeExtractor`` keeps the plugin's interface (``extract(archive,
folder)``, ``zip_ext``) and refuses instead: an entry outside the folder (``../``, an
absolute path, a drive), a symbolic link, more than ``max_bytes`` once unpacked (counted
as the bytes come out, so a zip that lies about its sizes is stopped too), a RAR or 7z
archive, and a zip inside a zip inside the download (zips in the download are unpacked
once, each into a folder named after it).
"""

from __future__ import annotations

import io
import stat
import zipfile
from pathlib import Path, PurePosixPath

from nbgrader.plugins.zipcollect import ExtractorPlugin
from traitlets import Integer

from autograder.course import CourseError

#: the default limit on what a download may hold once unpacked
MAX_BYTES = 500 * 2**20

#: the first bytes of archives this cannot unpack
OTHER_ARCHIVES = {b"Rar!\x1a\x07": "a RAR archive", b"7z\xbc\xaf\x27\x1c": "a 7z archive"}


class BadArchive(CourseError):
    """A download that is refused as a whole; the message names the file and what to do."""


def _kind(path: Path, head: bytes) -> str | None:
    for magic, kind in OTHER_ARCHIVES.items():
        if head.startswith(magic):
            return kind
    if path.suffix.lower() in (".rar", ".7z"):
        return f"a {path.suffix[1:].upper()} archive"
    return None


def _check_name(name: str, where: str) -> PurePosixPath:
    """The entry's path inside the folder, or BadArchive."""
    text = name.replace("\\", "/")
    parts = PurePosixPath(text).parts
    if text.startswith("/") or (len(text) > 1 and text[1] == ":") or ".." in parts:
        raise BadArchive(f"{where} has an entry outside its folder ({name!r}): this is not an LMS download as it "
                         "came; download it again from the LMS")
    return PurePosixPath(*[p for p in parts if p not in ("", ".")])


class SafeExtractor(ExtractorPlugin):
    """nbgrader's extractor plugin, unpacking with the checks above (see the module)."""

    max_bytes = Integer(MAX_BYTES, help="the most bytes a download may hold once unpacked").tag(config=True)

    def extract(self, archive_path: str, extracted_path: str) -> None:
        archive, out = Path(archive_path), Path(extracted_path)
        self._written = 0
        head = archive.open("rb").read(8)
        kind = _kind(archive, head)
        if kind:
            raise BadArchive(f"{archive.name} is {kind}: download the submissions again as the LMS gives them "
                             "(a .zip), or unpack it and zip it again")
        if not zipfile.is_zipfile(archive):
            raise BadArchive(f"{archive.name} is not a zip file: give collect the LMS's 'Download all submissions' zip")
        with zipfile.ZipFile(archive) as outer:
            self._unpack(outer, out, archive.name, nested=False)

    def _unpack(self, zf: zipfile.ZipFile, out: Path, where: str, nested: bool) -> None:
        for info in zf.infolist():
            target = _check_name(info.filename, where)
            mode = info.external_attr >> 16
            if stat.S_ISLNK(mode):
                raise BadArchive(f"{where} holds a symbolic link ({info.filename}): an LMS download has none; "
                                 "download it again from the LMS")
            if info.is_dir() or not target.parts:
                continue
            if any(target.name.lower().endswith(ext) for ext in self.zip_ext if ext == ".zip"):
                if nested:
                    raise BadArchive(f"{where} holds another zip ({info.filename}): zips are unpacked one level "
                                     "only; ask the student for the notebook itself, take it out of the download "
                                     "and collect again")
                data = self._read(zf, info, where)
                try:
                    inner = zipfile.ZipFile(io.BytesIO(data))
                except zipfile.BadZipFile:
                    raise BadArchive(f"{where}: {info.filename} is not a valid zip: ask the student for the "
                                     "notebook itself, take it out of the download and collect again") from None
                with inner:
                    self._unpack(inner, out / target.parent / target.name[: -len(".zip")],
                                 f"{where}: {info.filename}", nested=True)
                continue
            kind = _kind(target, b"")
            if kind:
                raise BadArchive(f"{where} holds {kind} ({info.filename}), which collect cannot unpack: ask the "
                                 "student for the notebook itself, take it out of the download and collect again")
            path = out / target
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(self._read(zf, info, where))
            path.touch()
            # the entry's time: the LMS's time of the file (the hand-in time when it has no other)
            self.times[str(path.relative_to(self._root))] = info.date_time

    def _read(self, zf: zipfile.ZipFile, info: zipfile.ZipInfo, where: str) -> bytes:
        """The entry's bytes, counted against the limit as they come out."""
        chunks = []
        with zf.open(info) as stream:
            while chunk := stream.read(1 << 20):
                self._written += len(chunk)
                if self._written > self.max_bytes:
                    raise BadArchive(f"{where} holds more than {self.max_bytes / 2**20:g} MB once unpacked: "
                                     "download the submissions of this assignment only, or raise --max-size "
                                     "if the download is genuine")
                chunks.append(chunk)
        return b"".join(chunks)


def unpack(archive: Path, folder: Path, max_bytes: int = MAX_BYTES) -> dict[str, tuple]:
    """Unpacks ``archive`` into ``folder`` (empty); returns each file's time in the zip, by
    its path in ``folder``. BadArchive when the archive is refused."""
    extractor = SafeExtractor(max_bytes=max_bytes)
    extractor.times = {}
    extractor._root = Path(folder)
    try:
        extractor.extract(str(archive), str(folder))
    except (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, EOFError) as error:
        raise BadArchive(f"{Path(archive).name} cannot be unpacked ({type(error).__name__}: {error}): download it "
                         "again from the LMS") from None
    return extractor.times
