"""A generated image-difference dataset in CLEVR-Change's own folder layout, rendered with Pillow on a CPU.

Each id ``N`` gets three images of one 2D scene of shapes (colour, size, texture, position)::

    DIR/images/CLEVR_default_00000N.png        the "before" scene
    DIR/sc_images/CLEVR_semantic_00000N.png    one semantic change: color, texture, add, drop or move
    DIR/nsc_images/CLEVR_nonsemantic_00000N.png  a distractor: the whole scene shifted, scaled or re-lit
    DIR/change_captions.json      {"CLEVR_default_00000N.png": [captions of the change, several phrasings]}
    DIR/no_change_captions.json   {"CLEVR_default_00000N.png": [no-change captions]}
    DIR/splits.json               {"train": [ids], "val": [ids], "test": [ids]}
    DIR/type_mapping.json         {"color": ["00000N.png", ...], "texture": [...], "add": ..., "drop": ..., "move": ...}

exactly as CLEVR-Change ships it (its own type for the material change is ``material``; the 2D analogue here is a
fill texture, so the type is ``texture``). The change is always visible, so a model that looks at both images can
learn it: the data carries a real learning signal, unlike random pixels.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, replace
from pathlib import Path

from PIL import Image, ImageDraw, ImageEnhance
from tqdm.auto import tqdm

from clipmath.errors import DatasetError

COLORS = {
    "red": (220, 40, 40),
    "green": (40, 180, 60),
    "blue": (40, 80, 220),
    "yellow": (230, 210, 40),
    "purple": (150, 60, 190),
    "cyan": (40, 200, 210),
    "gray": (130, 130, 130),
    "brown": (140, 90, 40),
}
SHAPES = ("circle", "square", "triangle")
TEXTURES = ("solid", "striped")
SIZES = {"small": 0.12, "large": 0.2}  # radius as a fraction of the image side
CHANGE_TYPES = ("color", "texture", "add", "drop", "move")
BACKGROUND = (235, 232, 225)

# Several phrasings per change type, in CLEVR-Change's style ("the X changed to Y", "someone added ...").
PHRASINGS = {
    "color": (
        "the {old} changed to {color}",
        "the {old} became {color}",
        "the {old} was painted {color}",
    ),
    "texture": (
        "the {old} changed to {texture}",
        "the {old} became {texture}",
        "the {old} is now {texture}",
    ),
    "add": (
        "someone added a {new}",
        "a {new} has appeared",
        "a {new} was added",
    ),
    "drop": (
        "the {old} has disappeared",
        "the {old} was removed",
        "someone removed the {old}",
    ),
    "move": (
        "the {old} moved",
        "the {old} changed its location",
        "someone moved the {old}",
    ),
}
NO_CHANGE_PHRASINGS = (
    "no change was made",
    "the scene is the same as before",
    "nothing has changed",
    "there is no difference",
    "the two scenes are the same",
)


@dataclass(frozen=True)
class Shape:
    kind: str
    color: str
    size: str
    texture: str
    x: float  # centre, as a fraction of the image side
    y: float

    def describe(self) -> str:
        """CLEVR-Change names an object by its attributes: "small striped red circle"."""
        texture = "" if self.texture == "solid" else f"{self.texture} "
        return f"{self.size} {texture}{self.color} {self.kind}"


def _free_spot(shapes: list[Shape], size: str, rng: random.Random) -> tuple[float, float] | None:
    radius = SIZES[size]
    for _ in range(200):
        x, y = rng.uniform(radius + 0.05, 0.95 - radius), rng.uniform(radius + 0.05, 0.95 - radius)
        if all((x - s.x) ** 2 + (y - s.y) ** 2 > (radius + SIZES[s.size] + 0.04) ** 2 for s in shapes):
            return x, y
    return None


def _random_shape(shapes: list[Shape], rng: random.Random) -> Shape | None:
    taken = {(s.kind, s.color) for s in shapes}
    for _ in range(50):
        kind, color = rng.choice(SHAPES), rng.choice(sorted(COLORS))
        if (kind, color) in taken:  # every object is nameable by its colour and kind alone
            continue
        size = rng.choice(sorted(SIZES))
        spot = _free_spot(shapes, size, rng)
        if spot is not None:
            return Shape(kind, color, size, rng.choice(TEXTURES), *spot)
    return None


def random_scene(rng: random.Random, min_objects: int = 2, max_objects: int = 4) -> list[Shape]:
    shapes: list[Shape] = []
    for _ in range(rng.randint(min_objects, max_objects)):
        shape = _random_shape(shapes, rng)
        if shape is not None:
            shapes.append(shape)
    return shapes


def render(shapes: list[Shape], size: int, offset: tuple[float, float] = (0.0, 0.0), scale: float = 1.0) -> Image.Image:
    """Draw the scene; ``offset``/``scale`` move the whole scene about the centre (the distractors' viewpoint)."""
    image = Image.new("RGB", (size, size), BACKGROUND)
    draw = ImageDraw.Draw(image)
    for s in shapes:
        cx = ((s.x - 0.5) * scale + 0.5 + offset[0]) * size
        cy = ((s.y - 0.5) * scale + 0.5 + offset[1]) * size
        r = SIZES[s.size] * scale * size
        box = (cx - r, cy - r, cx + r, cy + r)
        fill = COLORS[s.color]
        if s.kind == "circle":
            draw.ellipse(box, fill=fill)
        elif s.kind == "square":
            draw.rectangle(box, fill=fill)
        else:
            draw.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=fill)
        if s.texture == "striped":  # white stripes clipped to the shape via a mask
            mask = Image.new("L", (size, size), 0)
            mask_draw = ImageDraw.Draw(mask)
            if s.kind == "circle":
                mask_draw.ellipse(box, fill=255)
            elif s.kind == "square":
                mask_draw.rectangle(box, fill=255)
            else:
                mask_draw.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=255)
            stripes = Image.new("L", (size, size), 0)
            stripe_draw = ImageDraw.Draw(stripes)
            step = max(3, int(r / 2))
            for k in range(-size, 2 * size, step):
                stripe_draw.line([(k, 0), (k + size, size)], fill=255, width=max(1, step // 3))
            image.paste((255, 255, 255), (0, 0), Image.composite(stripes, Image.new("L", (size, size), 0), mask))
    return image


def make_change(shapes: list[Shape], change: str, rng: random.Random) -> tuple[list[Shape], str, str] | None:
    """Apply one change; returns (new scene, description of the changed object, of its new value) or None."""
    if change == "add":
        new = _random_shape(shapes, rng)
        return (shapes + [new], new.describe(), "") if new else None
    if not shapes:
        return None
    index = rng.randrange(len(shapes))
    target = shapes[index]
    rest = shapes[:index] + shapes[index + 1 :]
    if change == "drop":
        return (rest, target.describe(), "") if len(shapes) > 1 else None
    if change == "color":
        taken = {(s.kind, s.color) for s in rest}
        options = [c for c in sorted(COLORS) if c != target.color and (target.kind, c) not in taken]
        if not options:
            return None
        color = rng.choice(options)
        return rest[:index] + [replace(target, color=color)] + rest[index:], target.describe(), color
    if change == "texture":
        texture = next(t for t in TEXTURES if t != target.texture)
        return rest[:index] + [replace(target, texture=texture)] + rest[index:], target.describe(), texture
    if change == "move":
        spot = _free_spot(rest, target.size, rng)
        if spot is None or (spot[0] - target.x) ** 2 + (spot[1] - target.y) ** 2 < 0.05:
            return None
        return rest[:index] + [replace(target, x=spot[0], y=spot[1])] + rest[index:], target.describe(), ""
    raise DatasetError(f"unknown change type '{change}'; choose from {', '.join(CHANGE_TYPES)}")


def _captions(change: str, old: str, value: str) -> list[str]:
    fields = {"old": old, "new": old, "color": value, "texture": value}
    return [p.format(**fields) for p in PHRASINGS[change]]


def _distractor(shapes: list[Shape], size: int, rng: random.Random) -> Image.Image:
    """The same scene seen slightly differently: shifted, scaled and/or re-lit (CLEVR-Change's viewpoint/lighting)."""
    offset = (rng.uniform(-0.04, 0.04), rng.uniform(-0.04, 0.04))
    image = render(shapes, size, offset=offset, scale=rng.uniform(0.92, 1.06))
    return ImageEnhance.Brightness(image).enhance(rng.uniform(0.8, 1.2))


def make_change_set(
    folder: str | Path,
    pairs: int = 300,
    seed: int = 0,
    image_size: int = 64,
    splits: tuple[float, float] = (0.7, 0.1),
    progress: bool = False,
) -> Path:
    """Render ``pairs`` scene ids (each a change pair and a distractor pair) into ``folder``; returns the folder.

    ``splits`` are the train and val fractions (the rest is test). Same ``seed`` → byte-identical files.
    """
    if pairs < 3:
        raise DatasetError("a change set needs at least 3 pairs (one per split)")
    folder = Path(folder)
    for sub in ("images", "sc_images", "nsc_images"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    change_captions: dict[str, list[str]] = {}
    no_change_captions: dict[str, list[str]] = {}
    type_mapping: dict[str, list[str]] = {c: [] for c in CHANGE_TYPES}
    for index in tqdm(range(pairs), desc="rendering change pairs", disable=not progress, unit="pair"):
        change = CHANGE_TYPES[index % len(CHANGE_TYPES)]  # balanced types
        while True:
            before = random_scene(rng)
            made = make_change(before, change, rng)
            if made is not None:
                break
        after, old, value = made
        name = f"CLEVR_default_{index:06d}.png"
        render(before, image_size).save(folder / "images" / name)
        render(after, image_size).save(folder / "sc_images" / name.replace("default", "semantic"))
        _distractor(before, image_size, rng).save(folder / "nsc_images" / name.replace("default", "nonsemantic"))
        change_captions[name] = _captions(change, old, value)
        no_change_captions[name] = list(rng.sample(NO_CHANGE_PHRASINGS, 3))
        type_mapping[change].append(f"{index:06d}.png")
    ids = list(range(pairs))
    random.Random(seed + 1).shuffle(ids)
    n_train = max(1, int(pairs * splits[0]))
    n_val = max(1, int(pairs * splits[1]))
    split_ids = {
        "train": sorted(ids[:n_train]),
        "val": sorted(ids[n_train : n_train + n_val]),
        "test": sorted(ids[n_train + n_val :]),
    }
    for file_name, data in (
        ("change_captions.json", change_captions),
        ("no_change_captions.json", no_change_captions),
        ("splits.json", split_ids),
        ("type_mapping.json", type_mapping),
    ):
        (folder / file_name).write_text(json.dumps(data, indent=1))
    return folder


def change_set_words() -> list[str]:
    """Every word the change set's captions use."""
    texts = [p for group in PHRASINGS.values() for p in group] + list(NO_CHANGE_PHRASINGS)
    words = {w for t in texts for w in t.replace("{", " ").replace("}", " ").split()}
    words -= {"old", "new", "color", "texture"} - set(COLORS) - set(TEXTURES)
    words |= set(COLORS) | set(SHAPES) | set(TEXTURES) | set(SIZES) | {"color", "texture"}
    return sorted(words)


def build_change_set_clip(
    folder: str | Path, seed: int = 0, dim: int = 64, image_size: int = 64, patch_size: int = 16, layers: int = 2
) -> Path:
    """A tiny *randomly initialised* CLIP whose tokenizer reads the change set's words as whole tokens.

    For fast CPU runs of both training stages on a generated change set (bench and tests): captions are a handful of
    tokens instead of one token per character. Its numbers are plumbing and learning checks, never quality figures.
    """
    from clipmath.encoders.tiny import byte_vocab, save_random_clip

    vocab = byte_vocab()
    merges: list[str] = []
    for word in change_set_words():
        symbols = list(word[:-1]) + [word[-1] + "</w>"]
        prefix = symbols[0]
        for symbol in symbols[1:]:
            merges.append(f"{prefix} {symbol}")
            prefix += symbol
            vocab.setdefault(prefix, len(vocab))
    return save_random_clip(
        folder,
        vocab,
        list(dict.fromkeys(merges)),
        seed=seed,
        dim=dim,
        image_size=image_size,
        note="random weights, change-set words",
        patch_size=patch_size,
        layers=layers,
        heads=max(1, dim // 32),
        loud_positions=True,
    )
