"""Compaction: a store's vector file rewritten without the rows no item uses (after removals), as a new generation."""

from __future__ import annotations

from typing import Any

import numpy as np

from clipmath.store.manifest import (
    CHUNK_ROWS,
    block_digests,
    db_id,
    remove_other_generations,
    write_meta,
    write_vector_file,
)


def compact(gallery: Any) -> int:
    """Rewrite the vector file of ``gallery`` (a :class:`~clipmath.store.gallery.Gallery` open for writing) without
    rows no item uses; returns the number of rows dropped."""
    gallery._require_writer()
    snapshot = gallery.snapshot()
    old_file = gallery.meta["vector_file"]
    dropped = int(gallery.meta["vector_rows"]) - len(snapshot)
    if dropped == 0:
        return 0
    vectors = snapshot.vectors
    new_file = write_vector_file(
        gallery.path, old_file, (vectors[start : start + CHUNK_ROWS] for start in range(0, len(vectors), CHUNK_ROWS))
    )
    chunks = block_digests(np.asarray(vectors, dtype=gallery.dtype), 0)
    with gallery.manifest:
        gallery.manifest.executemany(
            "UPDATE items SET vec_row = ? WHERE id = ?",
            [(row, db_id(item_id)) for row, item_id in enumerate(snapshot.ids)],
        )
        gallery.manifest.execute("DELETE FROM chunks")
        gallery.manifest.executemany("INSERT INTO chunks (first_row, rows, sha256) VALUES (?, ?, ?)", chunks)
        write_meta(gallery.manifest, {"vector_file": new_file, "vector_rows": str(len(snapshot))})
    gallery.meta.update(vector_file=new_file, vector_rows=str(len(snapshot)))
    remove_other_generations(gallery.path, new_file)
    return dropped
