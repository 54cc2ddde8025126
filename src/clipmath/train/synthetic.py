"""A generated composed-retrieval dataset whose targets are a known transformation of the reference: recolouring.

Each image is one shape (circle, square, …) in one colour on a light background, at a position and size drawn per
*instance*. A query is (image of shape ``s`` in colour ``c``, instance ``i``) + the caption ``"is {c'}"``; its target
is the same drawing (shape ``s``, instance ``i``) in colour ``c'``. Nothing else differs, so the right answer is
exact, and held-out instances give held-out images. Used by the learning checks and the throughput benchmark; it
also gives captioned images (``"a red circle"``) for the SIMAT heads and word pairs for the delta method.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw

from clipmath.compose.base import CompositionQuery
from clipmath.train.data import CaptionedImage, Triplet

COLOURS = {
    "red": (220, 30, 30), "green": (30, 170, 50), "blue": (30, 60, 220), "yellow": (240, 210, 20),
    "purple": (140, 40, 170), "orange": (245, 130, 20), "black": (20, 20, 20), "white": (250, 250, 250),
}
SHAPES = ("circle", "square", "triangle", "cross", "ring", "bar")


@dataclass
class ShapesDataset:
    """Image files plus the triplets, captions and delta queries that describe them."""

    root: Path
    shapes: tuple[str, ...]
    colours: tuple[str, ...]
    instances: int

    def path(self, shape: str, colour: str, instance: int) -> Path:
        return self.root / f"{shape}_{colour}_{instance}.png"

    def images(self, instances: range | None = None) -> list[Path]:
        instances = instances if instances is not None else range(self.instances)
        return [self.path(s, c, i) for i in instances for s in self.shapes for c in self.colours]

    def triplets(self, instances: range | None = None) -> list[Triplet]:
        """Every recolouring query of the given instances: (s, c, i) + "is c'" → (s, c', i), c' ≠ c."""
        instances = instances if instances is not None else range(self.instances)
        return [
            Triplet(self.path(s, c, i), f"is {c2}", self.path(s, c2, i))
            for i in instances for s in self.shapes for c in self.colours for c2 in self.colours if c2 != c
        ]

    def captioned(self, instances: range | None = None) -> list[CaptionedImage]:
        instances = instances if instances is not None else range(self.instances)
        return [CaptionedImage(self.path(s, c, i), (f"a {c} {s}", f"a {s} in {c}", f"{c}"))
                for i in instances for s in self.shapes for c in self.colours]

    def delta_queries(self, instances: range | None = None) -> tuple[list[CompositionQuery], list[Path]]:
        """SIMAT-style queries (image, from-word c, to-word c') and their target images."""
        queries, targets = [], []
        for triplet in self.triplets(instances):
            shape, colour, instance = triplet.reference.stem.split("_")
            new_colour = triplet.caption.removeprefix("is ")
            queries.append(CompositionQuery(reference=triplet.reference, source=colour, target=new_colour))
            targets.append(triplet.target)
        return queries, targets


def draw_shape(shape: str, colour: tuple[int, int, int], box: tuple[int, int, int, int], size: int) -> Image.Image:
    image = Image.new("RGB", (size, size), (200, 200, 200))
    draw = ImageDraw.Draw(image)
    x0, y0, x1, y1 = box
    width = max(2, (x1 - x0) // 4)
    if shape == "circle":
        draw.ellipse(box, fill=colour)
    elif shape == "square":
        draw.rectangle(box, fill=colour)
    elif shape == "triangle":
        draw.polygon([((x0 + x1) // 2, y0), (x1, y1), (x0, y1)], fill=colour)
    elif shape == "cross":
        cx, cy = (x0 + x1) // 2, (y0 + y1) // 2
        draw.rectangle((cx - width // 2, y0, cx + width // 2, y1), fill=colour)
        draw.rectangle((x0, cy - width // 2, x1, cy + width // 2), fill=colour)
    elif shape == "ring":
        draw.ellipse(box, outline=colour, width=width)
    elif shape == "bar":
        draw.rectangle((x0, (y0 + y1) // 2 - width, x1, (y0 + y1) // 2 + width), fill=colour)
    else:
        raise ValueError(f"unknown shape {shape!r}")
    return image


def make_shapes_dataset(
    root: str | Path,
    shapes: int = 4,
    colours: int = 4,
    instances: int = 3,
    size: int = 64,
    seed: int = 0,
) -> ShapesDataset:
    """Write ``shapes × colours × instances`` PNG files under ``root`` (deterministic for a seed)."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    dataset = ShapesDataset(root, SHAPES[:shapes], tuple(list(COLOURS)[:colours]), instances)
    rng = random.Random(seed)
    for instance in range(instances):
        for shape in dataset.shapes:
            extent = rng.randint(size // 3, size * 3 // 4)
            x0, y0 = rng.randint(0, size - extent), rng.randint(0, size - extent)
            box = (x0, y0, x0 + extent, y0 + extent)
            for colour in dataset.colours:
                path = dataset.path(shape, colour, instance)
                if not path.exists():
                    draw_shape(shape, COLOURS[colour], box, size).save(path)
    return dataset
