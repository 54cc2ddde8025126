"""Index one generated video clip and report the video's frames decoded per second of indexing (and frames kept).

The clip (H.264, ``--width``×``--height`` at ``--fps``) shows the repository's example COCO photos, one per scene of
``--scene`` seconds, each panned slowly, so both the periodic sampler and the scene detector keep frames. Usage::

    PYTHONPATH=src python bench/video_index.py --seconds 60 --model tiny-random-clip
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import av
import numpy as np
from PIL import Image

from clipmath.encoders import load_encoder
from clipmath.store import IndexConfig, index_folder


def write_clip(path: Path, seconds: float, fps: int, width: int, height: int, scene: float) -> int:
    """Write the clip: each scene one of the example photos, panned slowly; returns its frame count."""
    photos = sorted((Path(__file__).parents[1] / "examples" / "gallery" / "coco").glob("*.jpg"))
    scenes = int(seconds // scene) + 1
    pan = round(scene * fps)
    pictures = [np.asarray(Image.open(p).convert("RGB").resize((width + pan, height))) for p in photos[:scenes]]
    count = round(seconds * fps)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for index in range(count):
            picture, shift = pictures[int(index / fps // scene) % len(pictures)], index % pan
            frame = np.ascontiguousarray(picture[:, shift : shift + width])  # panning one pixel a frame
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--fps", type=int, default=30)
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=720)
    parser.add_argument("--scene", type=float, default=5.0, help="seconds per scene")
    parser.add_argument("--model", default="tiny-random-clip")
    args = parser.parse_args()
    encoder = load_encoder(args.model)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "videos"
        root.mkdir()
        frames = write_clip(root / "clip.mp4", args.seconds, args.fps, args.width, args.height, args.scene)
        started = time.perf_counter()
        report = index_folder(Path(tmp) / "store", root, encoder, IndexConfig(), progress=False)
        seconds = time.perf_counter() - started
    print(f"model {encoder.info.label()}")
    print(
        f"{args.seconds:.0f} s clip, {args.width}x{args.height} at {args.fps} fps ({frames} frames, H.264): "
        f"indexed in {seconds:.2f} s = {frames / seconds:.0f} video frames/s, {report.frames} frames kept "
        f"({report.frames / seconds:.1f} kept frames/s)"
    )


if __name__ == "__main__":
    main()
