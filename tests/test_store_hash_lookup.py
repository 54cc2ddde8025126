"""Looking up stored content by hash for one batch (the Ray engine's driver and KnownContent actor): indexed queries
that answer exactly what the full hash map would, for any number of digests."""

from __future__ import annotations

import hashlib

import numpy as np

from clipmath.store import Gallery
from clipmath.store.records import ItemRecord


def digest(i: int) -> str:
    return hashlib.sha256(str(i).encode()).hexdigest()


def test_rows_for_hashes_equals_the_full_map_restricted_to_the_batch(tmp_path, tiny_encoder):
    count, dim = 1200, tiny_encoder.info.dim
    records = [ItemRecord(f"img_{i}.jpg", digest(i), 10, 1) for i in range(count)]
    vectors = np.random.default_rng(0).standard_normal((count, dim)).astype(np.float32)
    with Gallery.open_for_writing(tmp_path / "s", tiny_encoder.info, "clip", tmp_path) as gallery:
        gallery.commit(records, vectors)
        # a second id with already-stored content points to the same row
        gallery.commit(reused=[(ItemRecord("copy.jpg", digest(7), 10, 1), 7)])
        full = gallery.rows_by_hash()
        asked = [digest(i) for i in range(0, count + 300, 2)] + [digest(7), digest(3)]  # > 500: several queries
        found = gallery.rows_for_hashes(asked)
    assert found == {d: full[d] for d in asked if d in full}
    assert len(found) == count // 2 + 2 and found[digest(7)] == 7  # the stored evens, 7 and 3
    assert digest(count + 10) not in found
    with Gallery.open(tmp_path / "s") as reader:  # read-only connections answer too (the KnownContent actor)
        assert reader.rows_for_hashes([digest(5), "0" * 64]) == {digest(5): 5}
