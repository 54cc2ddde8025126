"""The server's difference captions: `/api/caption/difference` with a trained CLIP4IDC checkpoint or zero-shot,
the `clipmath serve --diff-checkpoint/--caption-lm/--decoder` start-up, and bad input (never a 500)."""

from __future__ import annotations

import io
import shutil
import socket

import pytest

pytest.importorskip("fastapi")

from fastapi.testclient import TestClient  # noqa: E402
from PIL import Image  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

from clipmath.caption.difference import TrainedDifferenceCaptioner  # noqa: E402
from clipmath.caption.service import make_captioner  # noqa: E402
from clipmath.cli import app as cli_app  # noqa: E402
from clipmath.data.change_set import build_change_set_clip, make_change_set  # noqa: E402
from clipmath.data.clevr_change import load_clevr_change  # noqa: E402
from clipmath.encoders import load_encoder  # noqa: E402
from clipmath.errors import ClipmathError  # noqa: E402
from clipmath.serve import create_app  # noqa: E402
from clipmath.store import index_folder  # noqa: E402
from clipmath.train.idc import IdcCaptionConfig, caption_task_factory  # noqa: E402
from clipmath.train.loop import fit  # noqa: E402
from tests.serve_support import build_store, open_retriever  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")
BASE_URL = "http://127.0.0.1"
COFFEE, CHELSEA = {"gallery_id": "skimage/coffee.png"}, {"gallery_id": "skimage/chelsea.png"}
NAMES = ["skimage/coffee.png", "skimage/chelsea.png", "skimage/astronaut.png"]


def _pair(before: dict, after: dict) -> dict:
    return {"before": before, "after": after}


def _png(color=(200, 30, 30), size=(48, 40)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def change_set(tmp_path_factory):
    """A tiny change set, a folder CLIP for its words, a store of its images, and a caption checkpoint (1 epoch)."""
    base = tmp_path_factory.mktemp("idc-serve")
    root = make_change_set(base / "cs", pairs=8, seed=0, image_size=64)
    encoder = load_encoder(str(build_change_set_clip(base / "clip", dim=32, layers=1)))
    train = load_clevr_change(root, "train").pairs
    config = IdcCaptionConfig(epochs=1, batch_size=4, lr=2e-3, coef_lr=1.0, progress=False)
    fit(caption_task_factory(encoder, train), config, base / "caption")
    images = base / "images"
    for pair in train[:2]:
        for path in (pair.before, pair.after):
            target = images / path.parent.name / path.name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target)
    index_folder(base / "store", images, encoder, progress=False)
    return base, encoder, train[:2]


def test_trained_checkpoint_captions_gallery_pairs_and_uploads(change_set):
    base, encoder, pairs = change_set
    captioner = make_captioner(encoder, None, base / "caption")
    assert captioner.captions_label is None and "CLIP4IDC" in captioner.differences_label
    expected = TrainedDifferenceCaptioner.load(base / "caption", encoder).caption(pairs[0].before, pairs[0].after)
    before = {"gallery_id": f"{pairs[0].before.parent.name}/{pairs[0].before.name}"}
    after = {"gallery_id": f"{pairs[0].after.parent.name}/{pairs[0].after.name}"}
    with TestClient(create_app(open_retriever(base / "store", encoder), captioner=captioner), base_url=BASE_URL) as c:
        info = c.get("/api/info").json()
        assert info["captioning"] is None and info["difference_captioning"] == captioner.differences_label
        assert c.post("/api/caption", json={"image": before}).status_code == 501  # no image captions without an LM
        answer = c.post("/api/caption/difference", json=_pair(before, after))
        assert answer.status_code == 200
        assert answer.json() == {"caption": expected.text, "captioner": captioner.differences_label}
        upload = c.post("/api/uploads", files={"image": ("a.png", pairs[0].after.read_bytes(), "image/png")}).json()
        from_upload = c.post("/api/caption/difference", json=_pair(before, {"upload_id": upload["upload_id"]}))
        assert from_upload.status_code == 200 and from_upload.json()["caption"] == expected.text
        same = c.post("/api/caption/difference", json=_pair(before, before))  # a trained model still runs
        assert same.status_code == 200 and isinstance(same.json()["caption"], str)


def test_zero_shot_difference_captions_with_a_language_model(tmp_path, tiny_encoder, monkeypatch):
    store, _ = build_store(tmp_path, tiny_encoder, NAMES)
    captioner = make_captioner(tiny_encoder, "tiny-random-lm", None)  # default decoder: magic
    assert captioner.captions_label.startswith("MAGIC") and captioner.differences_label.startswith("zero-shot MAGIC")
    with TestClient(create_app(open_retriever(store, tiny_encoder), captioner=captioner), base_url=BASE_URL) as c:
        info = c.get("/api/info").json()
        assert info["captioning"] == captioner.captions_label
        assert info["difference_captioning"] == captioner.differences_label
        encoded = []
        real_encode = tiny_encoder.encode_images
        monkeypatch.setattr(tiny_encoder, "encode_images", lambda images, *a, **k: encoded.append(len(images))
                            or real_encode(images, *a, **k))  # fmt: skip
        answer = c.post("/api/caption/difference", json=_pair(COFFEE, CHELSEA))
        assert answer.status_code == 200, answer.text
        assert answer.json()["caption"].strip() and answer.json()["captioner"] == captioner.differences_label
        assert encoded == []  # gallery images: their stored vectors, nothing re-encoded
        assert c.post("/api/caption/difference", json=_pair(COFFEE, COFFEE)).json()["caption"] == "no change"


@pytest.fixture(scope="module")
def fake_client(tmp_path_factory, tiny_encoder):
    store, _ = build_store(tmp_path_factory.mktemp("fake"), tiny_encoder, NAMES)
    captioner = make_captioner(tiny_encoder, None, None)
    assert captioner is None  # nothing asked for: captions stay off
    from clipmath.serve import FunctionCaptioner

    fake = FunctionCaptioner("diff only", difference_fn=lambda before, after: f"{before.label} to {after.label}")
    with TestClient(create_app(open_retriever(store, tiny_encoder), captioner=fake), base_url=BASE_URL) as client:
        yield client


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (_pair({"gallery_id": "nope.png"}, CHELSEA), 404),
        (_pair(COFFEE, {"gallery_id": "../secret.png"}), 404),
        (_pair(COFFEE, {"upload_id": "0" * 32}), 404),
        (_pair(COFFEE, {"upload_id": "not an id!"}), 422),
        ({"before": COFFEE}, 422),
        (_pair(COFFEE, {"gallery_id": "skimage/chelsea.png", "upload_id": "x"}), 422),
        ({"before": COFFEE, "after": CHELSEA, "extra": 1}, 422),
    ],
)
def test_bad_difference_requests_get_a_4xx(fake_client, body, status):
    response = fake_client.post("/api/caption/difference", json=body)
    assert response.status_code == status, response.text
    assert response.json()["detail"]


def test_fake_difference_function_sees_both_images_and_corrupt_uploads_are_refused(fake_client):
    answer = fake_client.post("/api/caption/difference", json=_pair(COFFEE, CHELSEA)).json()
    assert answer == {"caption": "skimage/coffee.png to skimage/chelsea.png", "captioner": "diff only"}
    for data, status in ((_png()[:60], 422), (b"not an image" * 9, 415), (b"", 400)):
        corrupt = fake_client.post("/api/uploads", files={"image": ("x.png", data, "image/png")})
        assert corrupt.status_code == status, corrupt.text
    upload = fake_client.post("/api/uploads", files={"image": ("r.png", _png(), "image/png")}).json()["upload_id"]
    answer = fake_client.post("/api/caption/difference", json=_pair({"upload_id": upload}, COFFEE)).json()
    assert answer["caption"] == f"upload:{upload} to skimage/coffee.png"
    assert fake_client.post("/api/caption", json={"image": COFFEE}).status_code == 501
    assert fake_client.get("/api/info").json()["captioning"] is None


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_checkpoint_of_another_encoder_is_a_one_line_start_up_error(change_set, tmp_path, tiny_encoder):
    base, _, _ = change_set
    store, _ = build_store(tmp_path, tiny_encoder, NAMES[:1])
    port = str(_free_port())
    result = CliRunner().invoke(
        cli_app, ["serve", str(store), "--port", port, "--diff-checkpoint", str(base / "caption")]
    )
    assert isinstance(result.exception, ClipmathError) and "trained on model" in str(result.exception)
    assert "\n" not in str(result.exception)
    result = CliRunner().invoke(
        cli_app, ["serve", str(store), "--port", port, "--caption-lm", "tiny-random-lm", "--decoder", "zerokap"]
    )
    assert isinstance(result.exception, ClipmathError) and "zerocap" in str(result.exception)
    missing = CliRunner().invoke(
        cli_app, ["serve", str(store), "--port", port, "--diff-checkpoint", str(tmp_path / "x")]
    )
    assert isinstance(missing.exception, ClipmathError)
