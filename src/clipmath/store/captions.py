"""Captions as data: each item's caption encoded by the store's model, kept in a companion store of text vectors.

A store's captions (the ``caption`` of its records' ``extra``: a tar sample's ``.txt``, a table's caption column)
are encoded into ``STORE/text``, a store of the same model, preprocessing and image root whose ids are the image
store's ids and whose vectors are the captions' text embeddings. It is searched like any store (``clipmath search
--target text`` opens it) and exported as clip-retrieval's ``text_emb/``.

:func:`index_captions` is incremental and crash-safe the way indexing is: it encodes only captions the text store does
not hold yet (or that changed: each text item keeps its caption's SHA-256), commits every ``commit_every``, and
drops text items whose image item is gone.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from tqdm.auto import tqdm

from clipmath.errors import StoreError
from clipmath.store.gallery import Gallery
from clipmath.store.manifest import MANIFEST, py_id
from clipmath.store.records import ItemRecord

if TYPE_CHECKING:
    from clipmath.encoders.base import Encoder

#: The companion store's folder inside a store.
TEXT_STORE = "text"


@dataclass
class CaptionReport:
    captions: int = 0
    added: int = 0
    unchanged: int = 0
    removed: int = 0
    seconds: float = 0.0


def text_store(store: str | Path) -> Path:
    """The folder of ``store``'s caption vectors."""
    return Path(store) / TEXT_STORE


def has_text_store(store: str | Path) -> bool:
    return (text_store(store) / MANIFEST).is_file()


def captions_of(gallery: Gallery) -> dict[str, str]:
    """``id -> caption`` of every item of ``gallery`` that has one."""
    found = {}
    for item_id, extra in gallery.manifest.execute("SELECT id, extra FROM items WHERE extra IS NOT NULL"):
        caption = json.loads(extra).get("caption")
        if isinstance(caption, str) and caption:
            found[py_id(item_id)] = caption
    return found


def index_captions(
    store: str | Path, encoder: Encoder, commit_every: int = 256, batch_size: int = 64, progress: bool = True
) -> CaptionReport:
    """Bring ``STORE/text`` up to date with the captions held by the store at ``store``."""
    started = time.monotonic()
    report = CaptionReport()
    with Gallery.open(store) as images:
        captions = captions_of(images)
        root, preprocessing = images.root, images.meta["preprocessing"]
    if preprocessing != encoder.transform.key:
        raise StoreError(f"{store} was built with preprocessing {preprocessing!r}, not {encoder.transform.key!r}")
    report.captions = len(captions)
    with Gallery.open_for_writing(text_store(store), encoder.info, preprocessing, root) as texts:
        held = texts.items()
        digests = {i: hashlib.sha256(c.encode("utf-8", "surrogatepass")).hexdigest() for i, c in captions.items()}
        todo = [i for i in captions if held.get(i, ("",))[0] != digests[i]]
        report.unchanged = len(captions) - len(todo)
        gone = [i for i in held if i not in captions]
        if gone:
            report.removed = texts.remove(gone)
        with tqdm(total=len(todo), desc="encoding captions", unit="caption", disable=not progress) as bar:
            for start in range(0, len(todo), commit_every):
                ids = todo[start : start + commit_every]
                vectors = encoder.encode_texts([captions[i] for i in ids], batch_size=batch_size)
                records = [ItemRecord(i, digests[i], len(captions[i]), 0, extra={"caption": captions[i]}) for i in ids]
                texts.commit(records, vectors)
                report.added += len(ids)
                bar.update(len(ids))
        if gone:
            texts.compact()
    report.seconds = time.monotonic() - started
    return report
