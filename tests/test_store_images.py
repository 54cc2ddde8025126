"""The one image decoder (clipmath.imageio): paths and bytes alike, limits, formats, EXIF orientation, special files."""

from __future__ import annotations

import io
import os
import threading

import pytest
from PIL import Image

from clipmath.imageio import MAX_PIXELS, ImageDecodeError, decode, decode_image
from clipmath.store import decode_image as store_decode_image


def _jpeg(size=(64, 32), orientation: int | None = None, color=(200, 30, 30)) -> bytes:
    image = Image.new("RGB", size, color)
    image.paste((20, 20, 220), (0, 0, size[0] // 4, size[1] // 4))  # a blue corner shows which way is up
    buffer = io.BytesIO()
    exif = Image.Exif()
    if orientation is not None:
        exif[0x0112] = orientation
    image.save(buffer, format="JPEG", exif=exif.tobytes(), quality=95)
    return buffer.getvalue()


def test_store_keeps_exporting_the_one_decoder():
    assert store_decode_image is decode_image


def test_path_and_bytes_decode_the_same(tmp_path):
    data = _jpeg()
    path = tmp_path / "a.jpg"
    path.write_bytes(data)
    from_path, from_bytes = decode_image(path), decode_image(data)
    assert from_path.mode == from_bytes.mode == "RGB"
    assert from_path.tobytes() == from_bytes.tobytes()


def test_exif_orientation_is_applied():
    upright = decode(_jpeg(orientation=1))
    turned = decode(_jpeg(orientation=6))  # "rotate 90° clockwise to display"
    assert upright.image.size == (64, 32)
    assert turned.image.size == (32, 64) and (turned.width, turned.height) == (32, 64)
    # the blue corner was top-left in the stored pixels; displayed rotated 90° clockwise it is top-right
    red, green, blue = turned.image.getpixel((30, 2))
    assert blue > 150 and red < 100


def test_damaged_exif_does_not_lose_the_image():
    data = bytearray(_jpeg(orientation=6))
    at = data.find(b"Exif\x00\x00")
    data[at + 6 : at + 14] = b"XXXXXXXX"  # TIFF header of the EXIF block destroyed
    assert decode_image(bytes(data)).size in ((64, 32), (32, 64))


@pytest.mark.parametrize(
    ("data", "kind"),
    [
        (b"", "empty"),
        (b"hello, not an image" * 10, "format"),
        (b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n", "format"),
        (b"%PDF-1.4\n1 0 obj<<>>endobj\n", "format"),
    ],
)
def test_refused_bytes_say_why(data, kind):
    with pytest.raises(ImageDecodeError) as info:
        decode_image(data)
    assert info.value.kind == kind and str(info.value)


def test_truncated_image_is_corrupt():
    data = _jpeg((256, 256))
    with pytest.raises(ImageDecodeError, match="truncated|cannot decode") as info:
        decode_image(data[: len(data) // 2])
    assert info.value.kind == "corrupt"


def test_pixel_limit_is_checked_before_decoding():
    buffer = io.BytesIO()
    Image.new("L", (300, 300)).save(buffer, format="PNG")
    with pytest.raises(ImageDecodeError, match="too many pixels") as info:
        decode_image(buffer.getvalue(), max_pixels=300 * 299)
    assert info.value.kind == "too_large"
    assert decode_image(buffer.getvalue(), max_pixels=300 * 300).size == (300, 300)


def test_one_limit_above_pillows_warning_is_usable():
    # an image just above Pillow's warning threshold is refused by our limit, not by a stray warning
    assert MAX_PIXELS == Image.MAX_IMAGE_PIXELS


def test_draft_decodes_large_jpegs_small_but_reports_the_full_size():
    result = decode(_jpeg((2048, 1024)), draft=(256, 256))
    assert result.image.size[0] < 2048 and min(result.image.size) >= 256
    assert (result.width, result.height) == (2048, 1024)


def test_named_pipe_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "pipe.jpg"
    os.mkfifo(fifo)
    outcome: list[BaseException] = []
    worker = threading.Thread(target=lambda: _capture(outcome, fifo), daemon=True)
    worker.start()
    worker.join(timeout=5)
    assert not worker.is_alive(), "decoding a named pipe blocked"
    assert isinstance(outcome[0], ImageDecodeError) and outcome[0].kind == "special"
    assert "named pipe" in str(outcome[0])


def test_device_and_directory_are_refused(tmp_path):
    with pytest.raises(ImageDecodeError, match="device"):
        decode_image("/dev/null")
    with pytest.raises(ImageDecodeError, match="directory"):
        decode_image(tmp_path)


def test_missing_and_unreadable_files(tmp_path):
    with pytest.raises(FileNotFoundError):
        decode_image(tmp_path / "missing.png")
    path = tmp_path / "locked.jpg"
    path.write_bytes(_jpeg())
    path.chmod(0)
    try:
        if os.access(path, os.R_OK):
            pytest.skip("running as root: permissions are not enforced")
        with pytest.raises(ImageDecodeError, match="permission denied"):
            decode_image(path)
    finally:
        path.chmod(0o644)


def _capture(outcome: list[BaseException], path) -> None:
    try:
        decode_image(path)
    except BaseException as exc:  # noqa: BLE001
        outcome.append(exc)
