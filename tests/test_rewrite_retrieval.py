"""Caption -> rewrite -> retrieve: the template rules, each method's query by hand, SEIZE's score, the cache, the
OpenAI-compatible client against a local server, and the methods through the public registry."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from clipmath.caption.rewrite_cache import RewriteCache
from clipmath.caption.rewrite_methods import (
    EnsembleRetrieval,
    EnsembleSettings,
    ImageFusionRetrieval,
    RewriteRetrieval,
    RewriteSettings,
    SeizeRetrieval,
    seize_scores,
    softmax_weights,
)
from clipmath.caption.rewriters import REWRITERS, load_prompt, load_rewriter
from clipmath.caption.template_rewrite import template_rewrite
from clipmath.compose import CompositionQuery, get_composer
from clipmath.errors import CaptionError, ComposeError
from clipmath.vectors import l2_normalise


# ---- template rules -----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("caption", "instruction", "expected"),
    [
        ("a brown dog sitting on a sofa", "make the dog white", "a white dog sitting on a sofa"),
        ("a red car by a house", "replace the car with a bicycle", "a red bicycle by a house"),
        ("the car is parked", "replace the car with a bicycle", "a bicycle is parked"),
        ("a cat on a bed", "change cat to dog", "a dog on a bed"),
        ("a man", "two dogs instead of a man", "two dogs"),
        ("a green shirt", "change the shirt to red", "a red shirt"),
        ("Image of a cat on a sofa", "make it white", "Image of a white cat on a sofa"),
        ("a blue shirt", "is black and has long sleeves", "a black shirt with long sleeves"),
        ("a woman holding an umbrella in the rain", "remove the umbrella", "a woman in the rain"),
        ("a woman in the rain", "remove the umbrella", "a woman in the rain without umbrella"),
        ("a man on a horse", "add a hat", "a man on a horse with a hat"),
        ("a cat on a bed.", "keep it the same", "a cat on a bed"),
        ("a plain dress", "is more elegant", "a plain dress that is more elegant"),
        ("a photo of a bowl", "make it look older", "a photo of a bowl, make it look older"),
    ],
)  # fmt: skip
def test_template_rules(caption, instruction, expected):
    assert template_rewrite(caption, instruction) == expected
    assert load_rewriter("template").rewrite(caption, instruction) == expected


def test_rewriter_registry_names_and_errors():
    assert {"template", "lm", "openai"} <= set(REWRITERS.names())
    with pytest.raises(CaptionError, match="did you mean 'template'"):
        load_rewriter("templte")
    with pytest.raises(CaptionError, match="needs NAME after ':'"):
        load_rewriter("lm")
    with pytest.raises(CaptionError, match="http"):
        load_rewriter("openai:ftp://x")
    with pytest.raises(CaptionError, match="unknown rewrite prompt"):
        load_rewriter("template", prompt="nope")
    prompt = load_prompt("cirevl")
    messages = prompt.messages("a cat", "make it red")
    assert messages[0]["role"] == "system" and messages[-1]["content"].endswith("Edited description:")
    assert len(messages) == 2 + 2 * len(prompt.examples) and "CIReVL" in prompt.source
    assert "Instruction: make it red" in prompt.plain("a cat", "make it red")


# ---- each method's query, by hand ----------------------------------------------------------------------------
class TableEncoder:
    """Texts map to fixed vectors (unknown texts: a hash-seeded random vector); images are given as vectors."""

    def __init__(self, table: dict[str, Sequence[float]]) -> None:
        self.table = {k: np.asarray(v, dtype=np.float32) for k, v in table.items()}
        self.dim = len(next(iter(self.table.values())))

    def encode_texts(self, texts: Sequence[str], batch_size: int = 256) -> np.ndarray:
        return l2_normalise(np.stack([self.table[t] for t in texts]))


class Captions:
    """A captioner double: fixed captions, counting its calls."""

    label = "table captions"

    def __init__(self, captions: list[str]) -> None:
        self.captions, self.calls = captions, 0

    def __call__(self, image: np.ndarray, count: int) -> list[str]:
        self.calls += 1
        return self.captions[:count]


class CountingTemplate:
    label = "template (counted)"

    def __init__(self) -> None:
        self.calls = 0

    def rewrite(self, caption: str, instruction: str) -> str:
        self.calls += 1
        return template_rewrite(caption, instruction)


TABLE = {
    "a brown dog": [1, 0, 0, 0], "a white dog": [0, 1, 0, 0],
    "a brown cat": [1, 0, 1, 0], "a white cat": [0, 1, 1, 0],
    "a brown fox": [1, 0, 0, 1], "a white fox": [0, 2, 0, 1],
}  # fmt: skip
IMAGE = l2_normalise(np.array([[1.0, 0.0, 0.5, 0.5]], dtype=np.float32))[0]
QUERY = CompositionQuery(reference=IMAGE, text="make it white")


def unit(v) -> np.ndarray:
    v = np.asarray(v, dtype=np.float32)
    return v / np.linalg.norm(v)


def make(cls, texts, **settings):
    return cls(cls.settings_class(**{"cache": False, **settings}), Captions(texts), CountingTemplate())


def test_cirevl_is_the_rewrite_text_embedding():
    composer = make(RewriteRetrieval, ["a brown dog"])
    np.testing.assert_allclose(composer.compose(TableEncoder(TABLE), [QUERY])[0], [0, 1, 0, 0], atol=1e-6)
    why = composer.explain(TableEncoder(TABLE), [QUERY])[0]
    assert why["captions"] == ["a brown dog"] and why["rewrites"] == ["a white dog"] and why["weights"] == [1.0]
    assert why["captioner"] == "table captions" and why["rewriter"] == "template (counted)"


def test_ldre_is_the_softmax_weighted_ensemble():
    captions = ["a brown dog", "a brown cat", "a brown fox"]
    composer = make(EnsembleRetrieval, captions, captions=3, temperature=0.5)
    after = np.stack([unit(TABLE[t]) for t in ("a white dog", "a white cat", "a white fox")])
    centre = unit(after.mean(axis=0))
    logits = after @ centre / 0.5
    weights = np.exp(logits) / np.exp(logits).sum()
    expected = unit(weights @ after)
    np.testing.assert_allclose(composer.compose(TableEncoder(TABLE), [QUERY])[0], expected, atol=1e-6)
    np.testing.assert_allclose(softmax_weights(after, 0.5), weights, atol=1e-6)
    assert EnsembleSettings().captions == 15 and RewriteSettings().captions == 1  # the papers' defaults


def test_pdv_adds_the_image_minus_its_caption():
    composer = make(ImageFusionRetrieval, ["a brown dog"], image_weight=0.5)
    expected = unit(unit(TABLE["a white dog"]) + 0.5 * (IMAGE - unit(TABLE["a brown dog"])))
    np.testing.assert_allclose(composer.compose(TableEncoder(TABLE), [QUERY])[0], expected, atol=1e-6)


def test_seize_score_and_gallery_scores():
    s_after, s_before = np.array([0.5, 0.5, 0.2]), np.array([0.7, 0.3, 0.2])
    # d = (-0.2, 0.2, 0): 0.5 - 2.1*0.2, 0.5 + 0.13*0.2, 0.2
    np.testing.assert_allclose(seize_scores(s_after, s_before), [0.08, 0.526, 0.2], atol=1e-9)
    composer = make(SeizeRetrieval, ["a brown dog"], captions=1)
    gallery = l2_normalise(np.array([[0, 1, 0, 0], [1, 0, 0, 0], [1, 1, 0, 0]], dtype=np.float32))
    scores = composer.gallery_scores(TableEncoder(TABLE), [QUERY], gallery)[0]
    after, before = gallery @ unit(TABLE["a white dog"]), gallery @ unit(TABLE["a brown dog"])
    d = after - before
    np.testing.assert_allclose(scores, after + 2.1 * np.minimum(d, 0) + 0.13 * np.maximum(d, 0))
    assert int(np.argmax(scores)) == 0 and scores[1] < scores[2]  # the image that lost the change ranks last


def test_missing_text_names_the_field():
    with pytest.raises(ComposeError) as info:
        make(RewriteRetrieval, ["a brown dog"]).compose(TableEncoder(TABLE), [CompositionQuery(reference=IMAGE)])
    assert info.value.field == "text"


# ---- the cache -------------------------------------------------------------------------------------------------
def test_second_run_makes_no_caption_or_rewrite_call(tmp_path):
    captions, rewriter = Captions(["a brown dog", "a brown cat"]), CountingTemplate()
    settings = EnsembleSettings(captions=2)
    first = EnsembleRetrieval(settings, captions, rewriter, RewriteCache(tmp_path / "c.sqlite"))
    vectors = first.compose(TableEncoder(TABLE), [QUERY, QUERY])
    assert (captions.calls, rewriter.calls) == (1, 2)  # the same image and text twice: made once
    again = EnsembleRetrieval(settings, captions, rewriter, RewriteCache(tmp_path / "c.sqlite"))  # a new process
    np.testing.assert_array_equal(again.compose(TableEncoder(TABLE), [QUERY]), vectors[:1])
    assert (captions.calls, rewriter.calls) == (1, 2) and again.cache.hits == 3
    other = CompositionQuery(reference=IMAGE, text="make the dog white")
    EnsembleRetrieval(settings, captions, rewriter, RewriteCache(tmp_path / "c.sqlite")).compose(
        TableEncoder(TABLE), [other]
    )
    assert (captions.calls, rewriter.calls) == (1, 4)  # a new instruction: new rewrites, cached captions


# ---- the OpenAI-compatible client --------------------------------------------------------------------------
class Endpoint:
    """A chat-completions server on 127.0.0.1 answering from a script of (status, body, delay) replies."""

    def __init__(self, replies: list[tuple[int, object, float]]) -> None:
        self.replies, self.requests = list(replies), []
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                endpoint.requests.append((self.path, dict(self.headers), body))
                status, payload, delay = endpoint.replies.pop(0) if endpoint.replies else (500, {}, 0)
                threading.Event().wait(delay)
                data = payload.encode() if isinstance(payload, str) else json.dumps(payload).encode()
                try:
                    self.send_response(status)
                    if status == 429:
                        self.send_header("Retry-After", "0")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def answer(text: str) -> dict:
    return {"choices": [{"message": {"role": "assistant", "content": text}}]}


def client(endpoint: Endpoint, **settings):
    from clipmath.caption.openai_rewriter import ChatSettings, OpenAIRewriter

    base = {"timeout": 1.0, "retries": 2, "backoff": 0.01, **settings}
    return OpenAIRewriter(f"{endpoint.url}#tiny-chat", load_prompt("cirevl"), ChatSettings(**base))


def test_openai_client_good_answer_sends_prompt_model_and_key(monkeypatch):
    monkeypatch.setenv("CLIPMATH_OPENAI_KEY", "sk-test")
    endpoint = Endpoint([(200, answer("Edited description: a white dog on grass\nextra"), 0)])
    try:
        rewriter = load_rewriter(f"openai:{endpoint.url}#tiny-chat")
        assert rewriter.rewrite("a brown dog on grass", "make it white") == "a white dog on grass"
        path, headers, body = endpoint.requests[0]
        assert path == "/v1/chat/completions" and headers["Authorization"] == "Bearer sk-test"
        assert body["model"] == "tiny-chat" and body["messages"][-1]["content"].startswith("Image content: a brown dog")
        assert "sk-test" not in rewriter.label
    finally:
        endpoint.close()


def test_openai_client_malformed_answers_are_one_line_errors():
    endpoint = Endpoint([(200, {"choices": []}, 0), (200, "not json", 0), (200, answer("   "), 0), (401, {}, 0)])
    try:
        rewriter = client(endpoint)
        for expected in ("without choices", "not JSON", "empty rewrite", "refused the rewrite: HTTP 401"):
            with pytest.raises(CaptionError, match=expected):
                rewriter.rewrite("a cat", "make it red")
        assert rewriter.requests == 4  # none of these is retried
    finally:
        endpoint.close()


def test_openai_client_retries_429_and_timeouts_then_gives_up():
    endpoint = Endpoint([(429, {}, 0), (200, answer("a red cat"), 1.5), (200, answer("a red cat"), 0)])
    try:
        rewriter = client(endpoint, timeout=0.5)
        assert rewriter.rewrite("a cat", "make it red") == "a red cat" and rewriter.requests == 3
        endpoint.replies = [(503, {}, 0)] * 3
        with pytest.raises(CaptionError, match=r"no rewrite after 3 tries \(HTTP 503\)"):
            rewriter.rewrite("a dog", "make it red")
    finally:
        endpoint.close()


# ---- through the registry, with real decoders and a tiny random LM ---------------------------------------------
def test_registered_methods_compose_with_a_decoder_and_an_lm_rewriter(tiny_encoder, tmp_path):
    queries = [CompositionQuery(reference=tiny_encoder.encode_texts(["a dog"])[0], text="make the dog white")]
    for name in ("cirevl", "ldre", "seize", "pdv"):
        composer = get_composer(name)
        assert composer.name == name and composer.needs == ("reference", "text")
    settings = RewriteSettings(language_model="tiny-random-lm", rewriter="lm:tiny-random-lm", cache=False)
    composer = RewriteRetrieval(settings)
    vectors = composer.compose(tiny_encoder, queries)
    assert vectors.shape == (1, tiny_encoder.dim) and np.isclose(np.linalg.norm(vectors[0]), 1.0, atol=1e-5)
    why = composer.explain(tiny_encoder, queries)[0]
    assert why["captions"][0].startswith("Image of a") and why["rewrites"][0]
    assert "RANDOM WEIGHTS" in why["captioner"] and "RANDOM WEIGHTS" in why["rewriter"]
    assert composer.caption_calls == 1 and composer.rewrite_calls == 1  # explain() reused both


# ---- front ends: search --json says which caption and rewrite made the query ------------------------------------
def test_cli_search_json_shows_captions_and_rewrites_and_seize_rescores(tmp_path, image_folder, monkeypatch):
    from typer.testing import CliRunner

    from clipmath.cli import app

    monkeypatch.setenv("CLIPMATH_LM", "tiny-random-lm")
    monkeypatch.setenv("CLIPMATH_CACHE", str(tmp_path / "cache"))
    runner, store = CliRunner(), str(tmp_path / "s")
    indexed = runner.invoke(app, ["index", str(image_folder), "--store", store, "--model", "tiny-random-clip"])
    assert indexed.exit_code == 0
    reference = str(image_folder / sorted(p.name for p in image_folder.iterdir())[0])
    found = {}
    for method in ("cirevl", "seize", "ldre[captions=2, rewriter=lm:tiny-random-lm, cache=no]"):
        result = runner.invoke(app, ["search", "--store", store, "--image", reference, "--text", "make it red",
                                     "--method", method, "-k", "3", "--json"])  # fmt: skip
        assert result.exit_code == 0, result.output
        found[method] = json.loads(result.stdout)
    why = found["cirevl"]["query"]
    assert why["captions"][0].startswith("Image of a") and len(why["rewrites"]) == 1
    assert "RANDOM WEIGHTS" in why["captioner"] and why["rewriter"].startswith("template")
    assert len(found["seize"]["query"]["captions"]) == 15 and len(found["seize"]["results"]) == 3
    scores = [r["score"] for r in found["seize"]["results"]]
    assert scores == sorted(scores, reverse=True)
    assert (tmp_path / "cache" / "rewrites.sqlite").exists()
    variant = found["ldre[captions=2, rewriter=lm:tiny-random-lm, cache=no]"]  # a variant named on the command line
    assert len(variant["query"]["captions"]) == 2 and "RANDOM WEIGHTS" in variant["query"]["rewriter"]


def test_rewriter_defaults_to_the_environment_then_template(monkeypatch):
    monkeypatch.delenv("CLIPMATH_REWRITER", raising=False)
    assert RewriteRetrieval(RewriteSettings(cache=False)).rewriter.label.startswith("template")
    monkeypatch.setenv("CLIPMATH_REWRITER", "openai:http://127.0.0.1:9/v1#m")
    assert RewriteRetrieval(RewriteSettings(cache=False)).rewriter.label.startswith("openai:http://127.0.0.1:9/v1")
    assert RewriteRetrieval(RewriteSettings(rewriter="template", cache=False)).rewriter.label.startswith("template")


# ---- variants: a method's settings set by name, the same way from every front end -------------------------------
def test_a_method_variant_sets_the_methods_own_settings():
    from clipmath.compose import split_method

    assert split_method("ldre[captions=5, rewriter=lm:x]") == ("ldre", {"captions": "5", "rewriter": "lm:x"})
    assert split_method(" sum ") == ("sum", {})
    composer = get_composer("ldre[captions=3, temperature=0.5, cache=off, language_model=none]")
    assert composer.name == "ldre[captions=3, temperature=0.5, cache=off, language_model=none]"
    assert isinstance(composer, EnsembleRetrieval) and composer.needs == ("reference", "text")
    assert (composer.settings.captions, composer.settings.temperature, composer.settings.cache) == (3, 0.5, False)
    assert composer.settings.seize_negative == 2.1  # the fields not named keep the method's defaults
    assert get_composer("seize[temperature=0.1]").settings.captions == 15  # SEIZE's own default stays


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("sum[lam=2]", "method 'sum' has no settings to set"),
        ("ldre[captionz=3]", "unknown setting 'captionz'; the settings are captions, decoder"),
        ("ldre[captions=many]", "'captions' takes int, not 'many'"),
        ("ldre[captions=99]", "'captions' must be at most"),
        ("ldre[cache=perhaps]", "'cache' takes bool"),
        ("ldre[captions]", "field=value pairs, not 'captions'"),
        ("ldre[captions=2", "NAME or NAME[field=value, ...]"),
        ("ldrx[captions=2]", "ldre"),
    ],
)
def test_a_bad_variant_is_one_error_naming_what_is_wrong(name, message):
    from clipmath.errors import ComposeError

    with pytest.raises(ComposeError, match=re.escape(message)):
        get_composer(name)


# ---- evaluation ranks SEIZE by its own score, as search does ----------------------------------------------------
def test_eval_ranks_seize_by_its_gallery_scores_not_its_query_vector(tiny_encoder, tmp_path):
    from clipmath.eval import EvalConfig, ScoreMatrix, load_benchmark, rank_cir
    from clipmath.eval.runner import prepare, score_method
    from clipmath.eval.scoring import RetrievalProtocol
    from tests.benchmark_folders import build_cirr

    config = EvalConfig(progress=False)
    prepared = prepare(load_benchmark("cirr", build_cirr(tmp_path / "CIRR")), tiny_encoder, tmp_path / "c", config)
    (dataset,) = prepared.datasets
    gallery = prepared.features.vectors[dataset.name]

    def seize() -> SeizeRetrieval:  # two captions per reference image, their rewrites by the template
        return make(SeizeRetrieval, ["a photo of a dog", "a red car"], captions=2)

    _, rankings = score_method(prepared, seize(), tiny_encoder, config, name="seize")
    _, ensemble = score_method(prepared, make(EnsembleRetrieval, ["a photo of a dog", "a red car"], captions=2),
                               tiny_encoder, config, name="ldre")  # fmt: skip
    direct = seize().gallery_scores(tiny_encoder, RetrievalProtocol.queries(dataset, gallery), gallery)
    expected = rank_cir(dataset, ScoreMatrix(direct), config.depth)
    assert rankings[("seize", dataset.name)].ranked_ids == expected.ranked_ids
    assert rankings[("seize", dataset.name)].ranked_ids != ensemble[("ldre", dataset.name)].ranked_ids
