"""Webdataset tar shards as an image source: the layout img2dataset writes and clip-retrieval reads.

A shard is a tar file whose members are grouped into samples by key (the name without its last extension):
``000000123.jpg`` (the image), ``000000123.txt`` (its caption), ``000000123.json`` (its metadata). Shards are named
on the command line as a brace pattern (``shards/{00000..00099}.tar``), a list of tar files, or a folder holding them
(img2dataset's output folder). A sample's id is readable and stable: the shard's path relative to the shards' common
folder, without ``.tar``, then the key (``00003/000030117``).

Reading is webdataset's (:func:`webdataset.tariterators.tar_file_iterator`, :func:`braceexpand.braceexpand`); what
it cannot tell apart is checked here: a tar that ends before its end-of-archive marker is *truncated* (its samples up
to the cut are used, the shard is reported), a sample with no image is reported under its id.
"""

from __future__ import annotations

import json
import os
import tarfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from clipmath.errors import ClipmathError
from clipmath.imageio import IMAGE_SUFFIXES

#: Member extensions read as a sample's caption and metadata.
CAPTION_EXT = "txt"
META_EXT = "json"
_IMAGE_EXTS = tuple(suffix.lstrip(".") for suffix in IMAGE_SUFFIXES)
#: A tar ends with two zero blocks of 512 bytes; a file that does not was cut short.
_END_OF_ARCHIVE = b"\0" * 1024


@dataclass
class Sample:
    """One webdataset sample: its key, image bytes (None if it has none), caption and metadata (if present)."""

    key: str
    image: bytes | None = None
    caption: str | None = None
    meta: dict | None = None
    members: list[str] = field(default_factory=list)

    def extra(self) -> dict | None:
        """What the store keeps of the sample besides its vector: caption and metadata (None when neither)."""
        held = {name: value for name, value in (("caption", self.caption), ("meta", self.meta)) if value is not None}
        return held or None


@dataclass
class ShardRead:
    """The outcome of reading one shard to its end: ``problem`` says why it ended early (None: read whole);
    ``count``: samples handed out (kept by the reader's caller)."""

    problem: str | None = None
    count: int = 0


def is_shard_spec(text: str) -> bool:
    """Whether a command-line source names shards (a ``.tar`` file or brace pattern, or a folder of tars)."""
    if "{" in text and "}" in text:
        return True
    path = Path(text)
    if path.suffix == ".tar":
        return True
    return path.is_dir() and any(path.glob("*.tar"))


def expand_shards(specs: Sequence[str]) -> list[Path]:
    """The tar files named by ``specs`` (brace patterns, tar files, folders of tars), in order, each once."""
    from braceexpand import braceexpand

    found: list[Path] = []
    for spec in specs:
        for name in braceexpand(str(spec)):
            path = Path(name)
            found.extend(sorted(path.glob("*.tar")) if path.is_dir() else [path])
    if not found:
        raise ClipmathError(f"no tar shards in {' '.join(map(str, specs))}")
    return list(dict.fromkeys(found))


def shards_root(shards: Sequence[Path]) -> Path:
    """The folder the shards share (the store's root; ids are relative to it)."""
    return Path(os.path.commonpath([str(p.parent.resolve()) for p in shards]))


def shard_name(shard: Path, root: Path) -> str:
    """The shard's readable name: its path under ``root`` without ``.tar`` (``00003``, ``part1/00003``)."""
    relative = shard.resolve().relative_to(root).as_posix()
    return relative[: -len(".tar")] if relative.endswith(".tar") else relative


def read_shard(path: Path, outcome: ShardRead) -> Iterator[Sample]:
    """The samples of one tar shard, in order. A read error or a missing end-of-archive marker ends the stream and
    is put in ``outcome.problem`` (samples read before it are yielded)."""
    from webdataset.tariterators import base_plus_ext, tar_file_iterator

    errors: list[Exception] = []

    def stop(exc: Exception) -> bool:
        errors.append(exc)
        return False

    current: Sample | None = None
    try:
        with open(path, "rb") as fh:
            for member in tar_file_iterator(fh, handler=stop):
                key, ext = base_plus_ext(member["fname"])
                if key is None:
                    continue
                if current is not None and key != current.key:
                    yield current
                    current = None
                current = current or Sample(key)
                _add_member(current, ext.lower(), member["data"])
    except (tarfile.TarError, OSError, EOFError) as exc:
        errors.append(exc)
    if errors:
        outcome.problem = f"truncated or unreadable tar: {_reason(errors[0])}"
        return  # the sample being read when the stream broke may be incomplete: not used
    if current is not None:
        if not _ends_with_marker(path):
            outcome.problem = "truncated tar: no end-of-archive marker (the file was cut short)"
            return
        yield current
    elif not _ends_with_marker(path):
        outcome.problem = "truncated tar: no end-of-archive marker (the file was cut short)"


def _add_member(sample: Sample, ext: str, data: bytes) -> None:
    sample.members.append(ext)
    if ext in _IMAGE_EXTS and sample.image is None:
        sample.image = data
    elif ext == CAPTION_EXT:
        sample.caption = data.decode("utf-8", "replace").strip()
    elif ext == META_EXT:
        try:
            value = json.loads(data)
        except ValueError:
            value = None
        sample.meta = value if isinstance(value, dict) else None


def _ends_with_marker(path: Path) -> bool:
    size = path.stat().st_size
    if size < len(_END_OF_ARCHIVE):
        return False
    with open(path, "rb") as fh:
        # tar pads to a record (10 KiB) with zeros; the last 1 KiB is zeros in any complete archive
        fh.seek(size - len(_END_OF_ARCHIVE))
        return fh.read() == _END_OF_ARCHIVE


def _reason(exc: Exception) -> str:
    text = str(exc.args[0]) if exc.args else type(exc).__name__
    return text.split(" @ ")[0]
