"""Generated composed-retrieval datasets whose targets are a known transformation of the reference.

* :func:`make_shapes_dataset` — recolouring. Each image is one shape (circle, square, …) in one colour on a light
  background, at a position and size drawn per *instance*. A query is (shape ``s``, colour ``c``, instance ``i``) +
  the caption ``"is {c'}"``; its target is the same drawing in colour ``c'``. Nothing else differs, so the right
  answer is exact, and held-out instances give held-out images. It also gives captioned images (``"a red circle"``)
  for the SIMAT heads and word pairs (``red`` → ``blue``) for the delta method.
* :func:`make_views_dataset` — a geometric edit of real photos. The reference is a photo (square centre crop), the
  caption ``"is mirrored and zoomed in"``, the target the same photo mirrored and zoomed in; other crops and tints of
  each photo are extra training views (phi learns from them, the references stay held out).

Used by the learning checks and the throughput benchmark.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw, ImageEnhance, ImageOps

from clipmath.compose.base import CompositionQuery
from clipmath.train.data import CaptionedImage, Triplet

COLOURS = {
    "red": (220, 30, 30),
    "green": (30, 170, 50),
    "blue": (30, 60, 220),
    "yellow": (240, 210, 20),
    "purple": (140, 40, 170),
    "orange": (245, 130, 20),
    "black": (20, 20, 20),
    "white": (250, 250, 250),
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
            for i in instances
            for s in self.shapes
            for c in self.colours
            for c2 in self.colours
            if c2 != c
        ]

    def captioned(self, instances: range | None = None) -> list[CaptionedImage]:
        instances = instances if instances is not None else range(self.instances)
        return [
            CaptionedImage(self.path(s, c, i), (f"a {c} {s}", f"a {s} in {c}", f"{c}"))
            for i in instances
            for s in self.shapes
            for c in self.colours
        ]

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


# ---- views of real photos --------------------------------------------------------------------------------------
VIEWS_CAPTION = "is mirrored and zoomed in"


@dataclass
class ViewsDataset:
    """Per photo: a reference, its mirrored + zoomed target, and a few other training views."""

    root: Path
    names: tuple[str, ...]
    views: int
    caption: str = VIEWS_CAPTION

    def reference(self, name: str) -> Path:
        return self.root / "reference" / f"{name}.png"

    def target(self, name: str) -> Path:
        return self.root / "target" / f"{name}.png"

    def training_views(self) -> list[Path]:
        return [self.root / "views" / f"{name}_{v}.png" for name in self.names for v in range(self.views)]

    def triplets(self) -> list[Triplet]:
        return [Triplet(self.reference(n), self.caption, self.target(n)) for n in self.names]

    def gallery(self) -> list[Path]:
        """Every reference and target (a query's own reference is excluded when ranking)."""
        return [self.reference(n) for n in self.names] + [self.target(n) for n in self.names]


def _square(image: Image.Image, size: int) -> Image.Image:
    side = min(image.size)
    left, top = (image.width - side) // 2, (image.height - side) // 2
    return image.crop((left, top, left + side, top + side)).resize((size, size), Image.Resampling.BICUBIC)


def _crop(image: Image.Image, fraction: float, anchor: tuple[float, float]) -> Image.Image:
    """The ``fraction``-sized window placed at ``anchor`` (0..1 along each axis)."""
    width, height = int(image.width * fraction), int(image.height * fraction)
    left, top = int((image.width - width) * anchor[0]), int((image.height - height) * anchor[1])
    return image.crop((left, top, left + width, top + height))


def mirrored_zoom(image: Image.Image, size: int = 224) -> Image.Image:
    """The known transformation: mirror left-right and zoom in to the central 75 %."""
    return _square(ImageOps.mirror(_crop(image, 0.75, (0.5, 0.5))), size)


def _training_view(image: Image.Image, index: int, size: int) -> Image.Image:
    anchors = [(0.0, 0.0), (1.0, 1.0), (1.0, 0.0), (0.0, 1.0)]
    view = _square(_crop(image, 0.8, anchors[index % len(anchors)]), size)
    return ImageEnhance.Color(view).enhance(0.6 + 0.3 * (index % 3))


def make_views_dataset(
    root: str | Path, photos: dict[str, str | Path], views: int = 2, size: int = 224
) -> ViewsDataset:
    """Write, for each named photo, its reference, target and ``views`` training views under ``root``."""
    root = Path(root)
    for folder in ("reference", "target", "views"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    dataset = ViewsDataset(root, tuple(photos), views)
    for name, path in photos.items():
        with Image.open(path) as opened:
            image = opened.convert("RGB")
        _square(image, size).save(dataset.reference(name))
        mirrored_zoom(image, size).save(dataset.target(name))
        for index in range(views):
            _training_view(image, index, size).save(root / "views" / f"{name}_{index}.png")
    return dataset
