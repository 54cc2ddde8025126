"""Start-up: an index re-run with nothing changed loads no model; the lazy encoder announces the same identity."""

from __future__ import annotations

import numpy as np
import pytest

from clipmath.encoders import lazy
from clipmath.encoders.identity import peek_info
from clipmath.encoders.tiny import tiny_clip_folder
from clipmath.store import index_folder
from tests.conftest import write_images


def _counting(monkeypatch) -> list[str]:
    import clipmath.encoders

    loads: list[str] = []
    real = clipmath.encoders.load_encoder

    def counted(name=None, **kwargs):
        loads.append(str(name))
        return real(name, **kwargs)

    monkeypatch.setattr(clipmath.encoders, "load_encoder", counted)
    return loads


def test_no_change_rerun_loads_no_model(tmp_path, monkeypatch):
    loads = _counting(monkeypatch)
    folder = tmp_path / "photos"
    write_images(folder, 6)
    first = lazy.LazyEncoder("tiny-random-clip", preprocessing="clip")
    report = index_folder(tmp_path / "store", folder, first, progress=False)
    assert report.added == 6 and loads == ["tiny-random-clip"] and first.loaded
    again = lazy.LazyEncoder("tiny-random-clip", preprocessing="clip")
    report = index_folder(tmp_path / "store", folder, again, progress=False)
    assert report.unchanged == 6 and report.added == 0
    assert loads == ["tiny-random-clip"] and not again.loaded  # nothing changed: no second load
    write_images(folder, 7)  # one new file: now the model is needed, once
    report = index_folder(tmp_path / "store", folder, again, progress=False)
    assert report.added == 1 and loads == ["tiny-random-clip", "tiny-random-clip"] and again.loads == 1


@pytest.mark.parametrize("name", ["tiny-random-clip", "offline-imagenet-minilm", "folder"])
def test_announced_identity_equals_the_loaded_one(name):
    name = str(tiny_clip_folder()) if name == "folder" else name
    stand_in = lazy.LazyEncoder(name, preprocessing="targetpad")
    announced, transform = stand_in.info, stand_in.transform
    assert not stand_in.loaded
    loaded = stand_in.load()  # raises if the announcement was wrong
    assert (loaded.info.model_id, loaded.info.dim, loaded.transform) == (announced.model_id, announced.dim, transform)


def test_unknowable_identity_loads_and_encoding_works(tmp_path):
    assert peek_info("auto") is None and peek_info("no-such/model-anywhere") is None
    (tmp_path / "clipmath.json").write_text("{}")  # a fine-tuned folder carries its own settings
    assert peek_info(str(tmp_path)) is None
    stand_in = lazy.LazyEncoder("tiny-random-clip")
    vectors = stand_in.encode_texts(["a cat", "a dog"])
    assert vectors.shape == (2, 32) and np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)


def test_first_encode_prepares_images_while_the_model_loads(tmp_path, monkeypatch):
    from clipmath.encoders import load_encoder

    names = write_images(tmp_path / "imgs", 20, size=(90, 60))
    paths = [tmp_path / "imgs" / n for n in names]
    expected = load_encoder("tiny-random-clip", preprocessing="targetpad").encode_files(paths, batch_size=8)
    stand_in = lazy.LazyEncoder("tiny-random-clip", preprocessing="targetpad")
    encoded = stand_in.encode_files(paths, batch_size=8, workers=2)
    assert stand_in.loads == 1
    assert encoded.indices == expected.indices and encoded.sizes == expected.sizes == [(90, 60)] * 20
    assert np.array_equal(encoded.vectors, expected.vectors)
    import clipmath.encoders.identity as identity
    from clipmath.encoders.pipeline import LITE_PIXELS

    monkeypatch.setattr(identity, "peek_pixel_spec", lambda name: LITE_PIXELS)  # a wrong announcement
    misled = lazy.LazyEncoder("tiny-random-clip", preprocessing="targetpad")
    again = misled.encode_files(paths, batch_size=8, workers=2)
    assert np.array_equal(again.vectors, expected.vectors)  # prepared again the model's way


def test_index_goes_through_the_worker_pipeline(tmp_path):
    from clipmath.encoders import load_encoder
    from clipmath.store import Gallery, IndexConfig

    folder = tmp_path / "photos"
    names = write_images(folder, 10, size=(70, 50))
    (folder / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    encoder = load_encoder("tiny-random-clip")
    report = index_folder(tmp_path / "store", folder, encoder, IndexConfig(workers=2, batch_size=4), progress=False)
    assert report.added == 10 and [item for item, _ in report.bad] == ["broken.jpg"]
    gallery = Gallery.open(tmp_path / "store")
    snapshot = gallery.snapshot()
    expected = encoder.encode_files([folder / i for i in snapshot.ids], batch_size=4, workers=0)
    np.testing.assert_allclose(snapshot.vectors, expected.vectors, atol=1e-6)
    assert {(gallery.record(n).width, gallery.record(n).height) for n in names} == {(70, 50)}
