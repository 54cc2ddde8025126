"""The caption memory and the `memory` decoder: projection by hand, arithmetic captions, the checked cache."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from clipmath.caption import DECODERS
from clipmath.caption.memory import CaptionMemory, MemoryConfig, MemoryDecoder, read_corpus
from clipmath.encoders.identity import EncoderInfo
from clipmath.errors import CaptionError

# A toy text space: each word adds its axis; a text is the normalised sum of its words' axes.
AXES = {"royal": 0, "male": 1, "female": 2, "dog": 3, "grass": 4}
WORDS = {
    "king": ["royal", "male"],
    "queen": ["royal", "female"],
    "man": ["male"],
    "woman": ["female"],
    "dog": ["dog"],
    "grass": ["grass"],
}


class ToyEncoder:
    """Embeds texts as bags of concept axes (see WORDS); counts the texts it embeds."""

    def __init__(self, model_id: str = "toy-words", offset: float = 0.0) -> None:
        self.info = EncoderInfo(model_id, "toy", len(AXES), pretrained=False)
        self.offset = offset  # other "weights" under the same model name
        self.encoded = 0

    @property
    def dim(self) -> int:
        return self.info.dim

    def encode_texts(self, texts, batch_size: int = 256, progress: bool = False) -> np.ndarray:
        self.encoded += len(texts)
        rows = np.full((len(texts), self.dim), self.offset, dtype=np.float32)
        for row, text in zip(rows, texts):
            for word in text.lower().replace(".", "").split():
                for concept in WORDS.get(word, []):
                    row[AXES[concept]] += 1.0
        return rows / np.linalg.norm(rows, axis=1, keepdims=True).clip(1e-12)


CORPUS = ["a king", "a queen", "a man", "a woman", "a dog on the grass"]


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CLIPMATH_CACHE", str(tmp_path / "cache"))


def test_projection_is_the_softmax_weighted_sum_computed_by_hand():
    texts = ["a", "b", "c"]
    vectors = np.array([[1, 0, 0], [0, 1, 0], [0.6, 0.8, 0]], dtype=np.float32)
    memory = CaptionMemory(texts, vectors, "toy")
    target = np.array([0.8, 0.6, 0.0], dtype=np.float32)
    # cosines 0.8, 0.6, 0.96; weights softmax(cos / 0.5)
    weights = np.exp(np.array([0.8, 0.6, 0.96]) / 0.5)
    weights /= weights.sum()
    expected = weights @ vectors
    expected /= np.linalg.norm(expected)
    projected = memory.project(target, temperature=0.5).numpy()
    np.testing.assert_allclose(projected, expected, rtol=1e-5)
    # only the two nearest weigh: texts c (0.96) and a (0.8)
    two = np.exp(np.array([0.8, 0.96]) / 0.5)
    expected_two = (two / two.sum()) @ vectors[[0, 2]]
    expected_two /= np.linalg.norm(expected_two)
    np.testing.assert_allclose(memory.project(target, 0.5, nearest=2).numpy(), expected_two, rtol=1e-5)
    # a cold softmax picks the nearest text itself; rows are projected independently
    batch = memory.project(torch.tensor([[0.8, 0.6, 0.0], [0.0, 0.1, 1.0]]), temperature=1e-4).numpy()
    np.testing.assert_allclose(batch, vectors[[2, 1]], atol=1e-5)


def test_nearest_captions_of_arithmetic_and_of_a_difference():
    encoder = ToyEncoder()
    memory = CaptionMemory.build(CORPUS, encoder)
    decoder = MemoryDecoder(None, encoder, MemoryConfig(captions=3), memory=memory)
    king, man, woman, dog = encoder.encode_texts(["king", "man", "woman", "dog"])
    best = decoder.caption(woman + king - man)
    assert [c.text for c in best][0] == "a queen"
    r = 2**-0.5  # woman + king - man = female + r·royal + (r - 1)·male; queen = r·(royal + female)
    assert best[0].clip_score == pytest.approx(r * (1 + r) / np.sqrt(1 + r**2 + (1 - r) ** 2), abs=1e-6)
    assert [c.clip_score for c in best] == sorted((c.clip_score for c in best), reverse=True) and len(best) == 3
    # the difference of two "images": (king) - (queen) points from female to male
    assert decoder.caption(king - encoder.encode_texts(["queen"])[0])[0].text == "a man"
    assert decoder.caption(dog)[0].full_text == "a dog on the grass"


def test_the_registered_decoder_reads_a_corpus_file_and_needs_no_language_model(tmp_path):
    corpus = tmp_path / "corpus.json"
    corpus.write_text(json.dumps([{"captions": CORPUS[:2]}, *CORPUS[2:]]))
    assert read_corpus(corpus) == CORPUS
    spec = DECODERS.get("memory")
    assert not spec.uses_lm and not DECODERS.get("decap").uses_lm and DECODERS.get("magic").uses_lm
    encoder = ToyEncoder()
    captions = spec.create(None, encoder, corpus=str(corpus), captions=2).caption(encoder.encode_texts(["king"])[0])
    assert captions[0].text == "a king" and captions[1].text in {"a queen", "a man"} and len(captions) == 2
    with pytest.raises(CaptionError, match="corpus"):
        spec.create(None, encoder)
    with pytest.raises(CaptionError, match="not found"):
        spec.create(None, encoder, corpus=str(tmp_path / "missing.txt"))
    with pytest.raises(CaptionError, match="5-d"):
        spec.create(None, encoder, corpus=str(corpus)).caption(np.ones(3, dtype=np.float32))


def test_the_cache_is_reused_checked_and_rebuilt_when_it_does_not_match(tmp_path):
    encoder = ToyEncoder()
    first = CaptionMemory.build(CORPUS, encoder)
    assert encoder.encoded == len(CORPUS)
    again = CaptionMemory.build(CORPUS, encoder)
    np.testing.assert_array_equal(again.vectors, first.vectors)
    assert encoder.encoded < 2 * len(CORPUS)  # only the probe texts were embedded again
    # other weights under the same model name: the probes differ, the cache is rebuilt
    other = ToyEncoder(offset=0.5)
    rebuilt = CaptionMemory.build(CORPUS, other)
    assert other.encoded > len(CORPUS) - 1 and not np.allclose(rebuilt.vectors, first.vectors)
    # a damaged cache file is never trusted
    for array in (tmp_path / "cache" / "caption-memory").glob("*.npy"):
        array.write_bytes(b"garbage")
    fresh = ToyEncoder()
    np.testing.assert_allclose(CaptionMemory.build(CORPUS, fresh).vectors, first.vectors)
    assert fresh.encoded == len(CORPUS)
    # no temporary files are left behind
    assert not list((tmp_path / "cache" / "caption-memory").glob("*.tmp"))


def test_a_memory_refuses_another_space():
    memory = CaptionMemory.build(CORPUS, ToyEncoder())
    with pytest.raises(CaptionError, match="embedded by toy-words"):
        MemoryDecoder(None, ToyEncoder("other-model"), memory=memory)


def test_the_bench_refuses_a_corpus_holding_an_evaluated_photos_references(tmp_path):
    import subprocess
    import sys

    from clipmath.caption.memory import overlapping_captions
    from tests.conftest import EXAMPLES, REPO
    from tests.test_cli import SRC_ENV

    references = json.loads((EXAMPLES / "captions.json").read_text())
    photo = sorted(references)[0]
    reference = references[photo]["captions"][2]
    shipped = EXAMPLES / "caption-corpus" / "coco_captions.txt"
    assert overlapping_captions(read_corpus(shipped), [c for r in references.values() for c in r["captions"]]) == []
    leaking = tmp_path / "leak.txt"
    leaking.write_text(shipped.read_text().splitlines()[0] + "\n" + reference.upper().rstrip(".") + " .\n")
    assert overlapping_captions(read_corpus(leaking), [reference]) == [reference]
    out = tmp_path / "o.json"
    result = subprocess.run(
        [sys.executable, str(REPO / "bench" / "caption_bench.py"), "--corpus", str(leaking), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        env=SRC_ENV,
    )
    assert result.returncode == 2 and "reference caption" in result.stderr and reference in result.stderr, result.stderr
    assert not out.exists()


def test_the_caption_command_and_the_server_use_the_memory_decoder(tmp_path, tiny_encoder):
    from types import SimpleNamespace

    from PIL import Image
    from typer.testing import CliRunner

    from clipmath.caption.service import make_captioner
    from clipmath.cli import app
    from tests.conftest import GALLERY

    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(CORPUS) + "\n")
    arithmetic = GALLERY / "arithmetic"
    expr = f"+{arithmetic / 'woman2.jpg'} +{arithmetic / 'king2.jpg'} -{arithmetic / 'man2.jpg'}"
    common = ["--decoder", "memory", "--corpus", str(corpus), "--model", "tiny-random-clip", "--json"]
    for source in (["--image", str(arithmetic / "king2.jpg")], ["--expr", expr]):
        result = CliRunner().invoke(app, ["caption", *source, *common])
        assert result.exit_code == 0, result.output
        payload = json.loads(result.stdout)
        assert payload["language_model"] == "none" and payload["decoder"] == "memory"
        assert len(payload["captions"]) == 5 and {c["text"] for c in payload["captions"]} == set(CORPUS)
    no_corpus = ["--decoder", "memory", "--model", "tiny-random-clip"]
    missing = CliRunner().invoke(app, ["caption", "--image", str(arithmetic / "king2.jpg"), *no_corpus])
    assert isinstance(missing.exception, CaptionError) and "corpus" in str(missing.exception)  # main(): exit 2
    foreign = CliRunner().invoke(
        app, ["caption", "--image", str(arithmetic / "king2.jpg"), *common, "--beam-size", "2"]
    )
    assert "--beam-size does not apply to the nearest caption decoder" in str(foreign.exception)  # ZeroCap's option

    assert make_captioner(tiny_encoder, None, None, "memory") is None  # no corpus: captions stay off
    captioner = make_captioner(tiny_encoder, None, None, "memory", "cpu", {"corpus": str(corpus)})
    assert captioner.captions_label.startswith("nearest caption")
    vector = tiny_encoder.encode_texts([CORPUS[1]])[0]
    assert captioner.caption([SimpleNamespace(vector=vector)]) == [CORPUS[1]]
    before, after = (Image.open(arithmetic / name).convert("RGB") for name in ("man2.jpg", "woman2.jpg"))
    assert captioner.difference(SimpleNamespace(image=before), SimpleNamespace(image=after)) in CORPUS
