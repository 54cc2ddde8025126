"""Videos in an indexed folder: a clip made here with PyAV, with distinct scenes at known times, is sampled into frame
rows (every N seconds plus scene changes), found at the right time, kept incrementally and crash-safely, skipped with
a reason when damaged, and served (frame thumbnails, the file with range requests)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

av = pytest.importorskip("av")

from typer.testing import CliRunner  # noqa: E402

from clipmath.cli import app as cli_app  # noqa: E402
from clipmath.compose import CompositionQuery  # noqa: E402
from clipmath.retrieval import Retriever  # noqa: E402
from clipmath.store import Gallery, IndexConfig, index_folder  # noqa: E402
from clipmath.store.check import check  # noqa: E402
from clipmath.store.filters import QueryControls  # noqa: E402
from clipmath.store.photometa import all_photo_meta  # noqa: E402
from clipmath.store.videoframes import NEEDS_PYAV, split_frame_id  # noqa: E402
from tests.conftest import write_images  # noqa: E402

#: (start, end) seconds of the clip's scenes: starts off the 2 s sampling grid, so only the detector finds them.
SCENES = [(0.0, 3.3), (3.3, 7.7), (7.7, 11.0)]
FPS = 10
CLIP = "trips/beach.mp4"


def scene_picture(index: int) -> np.ndarray:
    """A distinct 64x48 picture per scene: 8x8-pixel blocks of random colours."""
    blocks = (np.random.default_rng(100 + index).random((6, 8, 3)) * 255).astype(np.uint8)
    return np.kron(blocks, np.ones((8, 8, 1), dtype=np.uint8))


def write_clip(path: Path, scenes: list[tuple[float, float]] = SCENES, seed: int = 0, created: str = "") -> None:
    """An MPEG-4 clip at :data:`FPS` showing :func:`scene_picture` ``seed + i`` during scene ``i`` (``created``: the
    container's creation time)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        if created:
            container.metadata["creation_time"] = created
        stream = container.add_stream("mpeg4", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for frame_index in range(round(scenes[-1][1] * FPS)):
            scene = next(i for i, (_, end) in enumerate(scenes) if frame_index / FPS < end - 1e-9)
            frame = av.VideoFrame.from_ndarray(scene_picture(seed + scene), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    root = tmp_path / "media"
    write_images(root, 4)
    write_clip(root / CLIP, created="2021-05-04T10:30:00.000000Z")
    return root


def frame_times(store: Path, video: str = CLIP) -> list[float]:
    with Gallery.open(store) as gallery:
        metas = all_photo_meta(gallery).values()
        return sorted(m.time for m in metas if m.video == video)


def test_scene_changes_and_periodic_frames_are_rows_with_their_time(tmp_path, folder, tiny_encoder):
    only_scenes = index_folder(tmp_path / "a", folder, tiny_encoder, IndexConfig(video_every=100), progress=False)
    assert (only_scenes.added, only_scenes.videos, only_scenes.bad) == (4, 1, [])
    times = frame_times(tmp_path / "a")
    assert len(times) == len(SCENES)  # the detector finds each cut, and nothing else
    for start, _ in SCENES:
        assert any(abs(t - start) <= 1.0 for t in times)

    report = index_folder(tmp_path / "b", folder, tiny_encoder, IndexConfig(video_every=2), progress=False)
    times = frame_times(tmp_path / "b")
    assert report.frames == len(times) and all(b - a <= 2.0 + 1e-6 for a, b in zip(times, times[1:]))
    with Gallery.open(tmp_path / "b") as gallery:
        meta = all_photo_meta(gallery)[f"{CLIP}#t={times[1]:.3f}"]
        assert (meta.video, meta.time, meta.folder, meta.width, meta.height) == (CLIP, times[1], "trips", 64, 48)
        assert (meta.taken, meta.taken_from) == ("2021-05-04T10:30:00+00:00", "video")  # the container's date
        assert meta.as_dict()["video"] == CLIP and all_photo_meta(gallery)["img_0000.jpg"].video is None
    assert check(tmp_path / "b").ok  # frame rows are ordinary rows to the checker
    capped = index_folder(tmp_path / "c", folder, tiny_encoder, IndexConfig(max_frames=2), progress=False)
    assert capped.frames == 2


def test_a_scene_picture_finds_a_frame_inside_that_scene(tmp_path, folder, tiny_encoder):
    index_folder(tmp_path / "s", folder, tiny_encoder, progress=False)
    retriever = Retriever(Gallery.open(tmp_path / "s"), tiny_encoder)
    for scene, (start, end) in enumerate(SCENES):
        query = tmp_path / f"scene{scene}.png"
        Image.fromarray(scene_picture(scene)).save(query)
        page = retriever.search_page(CompositionQuery(reference=str(query)), QueryControls(), method="image", k=3)
        video, seconds = split_frame_id(page.hits[0].id)
        assert video == CLIP and start - 1.0 <= seconds < end + 1.0, page.hits
    collapsed = retriever.search_page(CompositionQuery(reference=str(query)), QueryControls(per_video=True), "image", 9)
    assert [h.id for h in collapsed.hits if split_frame_id(h.id)] == [page.hits[0].id]  # the best frame only
    assert len(collapsed.hits) == 5 and collapsed.exhausted  # 4 photos and 1 video


def test_unchanged_videos_are_not_decoded_changed_ones_replaced_deleted_ones_pruned(
    tmp_path, folder, tiny_encoder, monkeypatch
):
    store = tmp_path / "s"
    index_folder(store, folder, tiny_encoder, progress=False)
    before = frame_times(store)
    import clipmath.store.video as video_module

    opened = []
    real_reader = video_module.VideoReader
    monkeypatch.setattr(video_module, "VideoReader", lambda path: opened.append(path) or real_reader(path))
    again = index_folder(store, folder, tiny_encoder, progress=False)
    assert (opened, again.videos, again.unchanged) == ([], 0, 5)

    clip = folder / CLIP
    os.utime(clip, ns=(clip.stat().st_atime_ns, clip.stat().st_mtime_ns + 10**9))  # touched, same content
    touched = index_folder(store, folder, tiny_encoder, progress=False)
    assert opened == [] and touched.videos == 0 and frame_times(store) == before
    with Gallery.open(store) as gallery:
        assert {r[2] for i, r in gallery.items().items() if "#t=" in i} == {clip.stat().st_mtime_ns}

    write_clip(clip, [(0.0, 1.5), (1.5, 6.0)], seed=7)  # rewritten: another clip
    changed = index_folder(store, folder, tiny_encoder, progress=False)
    after = frame_times(store)
    assert len(opened) == 1 and changed.videos == 1 and after[-1] < 6.0 and after != before
    with Gallery.open(store) as gallery:
        assert sum(split_frame_id(i) is not None for i in gallery.items()) == len(after)

    clip.unlink()
    kept = index_folder(store, folder, tiny_encoder, progress=False)
    assert kept.missing == len(after) and frame_times(store) == after
    pruned = index_folder(store, folder, tiny_encoder, IndexConfig(prune=True), progress=False)
    assert pruned.pruned == len(after) and frame_times(store) == [] and pruned.total == 4


def test_damaged_videos_are_skipped_with_their_reason_and_photos_still_index(tmp_path, folder, tiny_encoder):
    data = (folder / CLIP).read_bytes()
    (folder / "cut.mp4").write_bytes(data[: len(data) // 2])
    (folder / "notes.mp4").write_text("this is not a video\n")
    with av.open(str(folder / "sound.mkv"), "w") as container:  # a file with an audio stream only
        stream = container.add_stream("pcm_s16le", rate=8000, layout="mono")
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 800), dtype=np.int16), format="s16", layout="mono")
        frame.sample_rate, frame.pts = 8000, 0
        for packet in [*stream.encode(frame), *stream.encode()]:
            container.mux(packet)
    report = index_folder(tmp_path / "s", folder, tiny_encoder, progress=False)
    reasons = dict(report.bad)
    assert set(reasons) == {"cut.mp4", "notes.mp4", "sound.mkv"}
    assert "video" in reasons["cut.mp4"] and "video" in reasons["notes.mp4"]
    assert reasons["sound.mkv"] == "no video stream in the file"
    assert report.added == 4 and report.videos == 1
    with Gallery.open(tmp_path / "s") as gallery:
        assert dict(gallery.bad_files()) == reasons
        assert not any(i.startswith(("cut.mp4", "notes.mp4")) for i in gallery.items())


class FailingEncoder:
    """The tiny encoder, except that its ``calls``-th batch of decoded images raises (a run killed there)."""

    def __init__(self, encoder, calls: int) -> None:
        self._encoder, self._left, self.encoded = encoder, calls, 0

    def __getattr__(self, name: str):
        return getattr(self._encoder, name)

    def encode_images(self, images, batch_size: int = 32):
        self._left -= 1
        if self._left <= 0:
            raise KeyboardInterrupt("killed in the middle of a video")
        self.encoded += len(images)
        return self._encoder.encode_images(images, batch_size=batch_size)


def test_a_run_killed_in_the_middle_of_a_video_leaves_none_of_it_and_a_rerun_completes(tmp_path, folder, tiny_encoder):
    store, config = tmp_path / "s", IndexConfig(batch_size=2)
    failing = FailingEncoder(tiny_encoder, calls=2)
    with pytest.raises(KeyboardInterrupt):
        index_folder(store, folder, failing, config, progress=False)
    assert failing.encoded == 2  # the video's first batch of frames was encoded before the kill
    with Gallery.open(store) as gallery:
        assert len(gallery.items()) == 4 and frame_times(store) == []  # photos committed, no frame of the video
    report = index_folder(store, folder, tiny_encoder, config, progress=False)
    assert report.videos == 1 and report.unchanged == 4 and len(frame_times(store)) == report.frames >= 3


def test_without_pyav_photos_index_and_videos_are_skipped_with_the_reason(tmp_path, folder, tiny_encoder, monkeypatch):
    monkeypatch.setitem(sys.modules, "av", None)  # `import av` raises ImportError
    report = index_folder(tmp_path / "s", folder, tiny_encoder, progress=False)
    assert report.added == 4 and report.bad == [(CLIP, NEEDS_PYAV)]
    monkeypatch.undo()
    assert index_folder(tmp_path / "s", folder, tiny_encoder, progress=False).videos == 1  # with PyAV back


def test_search_shows_the_video_and_time_of_a_frame(tmp_path, folder):
    store = tmp_path / "s"
    result = CliRunner().invoke(cli_app, ["index", str(folder), "--store", str(store), "--model", "tiny-random-clip"])
    assert result.exit_code == 0 and "1 videos sampled" in result.stdout, result.output
    query = tmp_path / "q.png"
    Image.fromarray(scene_picture(1)).save(query)
    args = ["search", "--store", str(store), "--image", str(query), "--glob", "*.mp4#*", "-k", "2"]
    shown = CliRunner().invoke(cli_app, args)
    assert shown.exit_code == 0 and f"{CLIP} at 0:0" in shown.stdout, shown.output
    payload = json.loads(CliRunner().invoke(cli_app, [*args, "--json"]).stdout)
    photo = payload["results"][0]["photo"]
    assert photo["video"] == CLIP and payload["results"][0]["id"] == f"{CLIP}#t={photo['time']:.3f}"
    assert payload["results"][0]["path"] == str(folder / CLIP)  # the file to open is the video
    info = CliRunner().invoke(cli_app, ["info", str(store), "--json"])
    assert json.loads(info.stdout)["photos"]["videos"] == 1


def av_open(path):
    import av

    return av.open(str(path))


def test_http_thumbnail_of_a_frame_and_the_video_with_range_requests(tmp_path, folder, tiny_encoder):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from clipmath.serve import ServeConfig, create_app

    write_clip(folder / "later-a-link.mp4", SCENES[:1])
    index_folder(tmp_path / "s", folder, tiny_encoder, progress=False)
    (folder / "later-a-link.mp4").unlink()
    (tmp_path / "secret.mp4").write_bytes(b"outside the image folder")
    (folder / "later-a-link.mp4").symlink_to(tmp_path / "secret.mp4")  # now leads outside the folder
    app = create_app(Retriever(Gallery.open(tmp_path / "s"), tiny_encoder), ServeConfig())
    with TestClient(app, base_url="http://127.0.0.1") as client:
        frame = f"{CLIP}#t={frame_times(tmp_path / 's')[1]:.3f}"
        thumb = client.get("/api/thumbnail/" + frame.replace("#", "%23"))
        assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/jpeg"
        assert thumb.content[:3] == b"\xff\xd8\xff" and Image.open(__import__("io").BytesIO(thumb.content)).size
        whole = client.get("/api/image/" + frame.replace("#", "%23"))  # the frame itself, at the video's size
        assert whole.status_code == 200 and whole.headers["content-type"] == "image/jpeg"
        with Image.open(__import__("io").BytesIO(whole.content)) as shown, av_open(folder / CLIP) as container:
            assert shown.size == (container.streams.video[0].width, container.streams.video[0].height)

        data = (folder / CLIP).read_bytes()
        part = client.get(f"/api/video/{CLIP}", headers={"Range": "bytes=100-199"})
        assert part.status_code == 206 and part.content == data[100:200]
        assert part.headers["content-type"] == "video/mp4" and part.headers["content-range"].endswith(f"/{len(data)}")
        assert client.get(f"/api/video/{CLIP}").content == data
        assert client.get("/api/video/img_0000.jpg").status_code == 404  # a photo is not a video
        assert client.get("/api/video/trips/nothing.mp4").status_code == 404
        assert client.get("/api/video/..%2F..%2Fetc%2Fpasswd.mp4").status_code == 404
        assert client.get("/api/video/later-a-link.mp4").status_code == 403  # as /api/image refuses it


def test_frames_of_one_video_are_not_duplicates_of_each_other():
    from clipmath.store.duplicates import duplicate_groups

    ids = [f"{CLIP}#t=0.000", f"{CLIP}#t=2.000", "other.mp4#t=0.000", "a.jpg", "b.jpg"]
    groups = duplicate_groups(ids, [(0, 1, 0.99), (3, 4, 0.98), (1, 2, 0.97)], {})
    assert sorted(sorted(g.ids) for g in groups) == sorted([sorted(ids[1:3]), ["a.jpg", "b.jpg"]])


def test_a_frame_read_back_at_its_time_shows_that_scene(folder):
    pytest.importorskip("fastapi")
    from clipmath.serve.images import gallery_image

    for scene, (start, end) in reversed(list(enumerate(SCENES))):  # backwards: each read seeks
        for seconds in (start, (start + end) / 2):
            shown = np.asarray(gallery_image(folder / f"{CLIP}#t={seconds:.3f}"), dtype=np.float32)
            errors = [np.abs(shown - scene_picture(i)).mean() for i in range(len(SCENES))]
            assert int(np.argmin(errors)) == scene and errors[scene] < 0.4 * sorted(errors)[1], errors


def test_a_video_that_repair_left_without_some_frames_is_read_again(tmp_path, folder, tiny_encoder):
    """Frame rows are the record of a video: after ``repair`` drops one it cannot verify, the next run sees the
    video as incomplete (each row says how many frames its version has) and restores the frame."""
    import sqlite3

    from clipmath.store import repair
    from clipmath.store.manifest import MANIFEST

    store = tmp_path / "s"
    index_folder(store, folder, tiny_encoder, progress=False)
    times = frame_times(store)
    victim = f"{CLIP}#t={times[1]:.3f}"
    with sqlite3.connect(store / MANIFEST) as conn:
        conn.execute("UPDATE items SET vec_row = 9999 WHERE id = ?", (victim,))
    fixed = repair(store)
    assert fixed.dropped_items == [victim] and check(store).ok and len(frame_times(store)) == len(times) - 1
    assert check(store).notes == [f"video {CLIP}: {len(times) - 1} of its {len(times)} frames (the next index run "
                                  "reads it again)"]  # fmt: skip
    again = index_folder(store, folder, tiny_encoder, progress=False)
    assert (again.videos, again.frames) == (1, len(times)) and frame_times(store) == times and check(store).ok
    assert index_folder(store, folder, tiny_encoder, progress=False).videos == 0  # complete again: not read
    assert check(store).notes == []
