"""clip-retrieval's back-end API on a clipmath server: ``POST /knn-service`` and ``GET /indices-list``, so
clip-retrieval's front end and scripts (``ClipClient``) can query a clipmath store.

A request names one query: ``text``, ``image`` (base64 bytes) or ``embedding_input`` (a vector in the store's space),
and ``num_images`` (k; the server's default k when absent). The answer is clip-retrieval's: a JSON list, best first,
of ``{"id", "similarity"}`` plus the item's ``caption``, ``url`` and ``image_path`` where the store holds them (and
``item_id``, the store's id). ``modality: "text"`` (a caption index) and ``image_url`` (fetching) are not served: 400
with the reason. Options clip-retrieval has for LAION's filters (``deduplicate``, ``use_safety_model``,
``aesthetic_score``, ...) are ignored.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable

import numpy as np
from fastapi import Depends, FastAPI
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict, Field

from clipmath.retrieval import Retriever
from clipmath.serve.config import ServeConfig
from clipmath.serve.errors import RequestError
from clipmath.serve.images import decode_upload


class KnnRequest(BaseModel):
    """clip-retrieval's ``/knn-service`` body (fields it sends that clipmath does not use are accepted, ignored)."""

    model_config = ConfigDict(extra="ignore")

    text: str | None = None
    image: str | None = Field(None, description="base64-encoded image file")
    image_url: str | None = None
    embedding_input: list[float] | None = None
    modality: str = "image"
    num_images: int | None = Field(None, ge=1, description="k (default: the server's default k)")
    num_result_ids: int | None = Field(None, ge=1)
    indice_name: str | None = None


def add_knn_service(app: FastAPI, retriever: Retriever, config: ServeConfig, require_token: Callable) -> None:
    """Mount ``/knn-service`` and ``/indices-list`` on ``app`` (token-checked as ``/api`` is)."""
    name = retriever.gallery.path.name

    @app.get("/indices-list", dependencies=[Depends(require_token)], summary="clip-retrieval: the served index")
    def indices_list() -> list[str]:
        return [name]

    @app.post("/knn-service", dependencies=[Depends(require_token)], summary="clip-retrieval's k-NN query")
    async def knn_service(request: KnnRequest) -> list[dict]:
        if request.modality != "image":
            raise RequestError(400, "this store holds image embeddings only (modality 'image')")
        if request.indice_name not in (None, "", name):
            raise RequestError(400, f"unknown index {request.indice_name!r}; this server serves {name!r}")
        request.num_images = request.num_images or config.default_k
        if request.num_images > config.max_k:
            raise RequestError(422, f"num_images = {request.num_images} is above this server's limit of {config.max_k}")
        return await run_in_threadpool(_answer, retriever, request, config.max_pixels)


def _answer(retriever: Retriever, request: KnnRequest, max_pixels: int) -> list[dict]:
    vector = _query_vector(retriever, request, max_pixels)
    snapshot, hits = retriever.search_vectors(vector[None, :], request.num_images)
    results = []
    for hit in hits[0]:
        record = retriever.gallery.record(hit.id)
        extra = (record.extra if record else None) or {}
        row = {"id": snapshot.row_of(hit.id), "similarity": float(hit.score), "item_id": hit.id}
        row["image_path"] = str(snapshot.path_of(hit.id))
        if extra.get("caption") is not None:
            row["caption"] = extra["caption"]
        url = (extra.get("meta") or {}).get("url")
        if url is not None:
            row["url"] = url
        results.append(row)
    return results


def _query_vector(retriever: Retriever, request: KnnRequest, max_pixels: int) -> np.ndarray:
    given = [f for f in ("text", "image", "image_url", "embedding_input") if getattr(request, f) not in (None, "")]
    if len(given) != 1:
        raise RequestError(400, "give exactly one of text, image, embedding_input")
    encoder = retriever.encoder
    if request.text:
        vector = encoder.encode_texts([request.text])[0]
    elif request.image:
        try:
            data = base64.b64decode(request.image.split(",")[-1], validate=True)
        except (binascii.Error, ValueError):
            raise RequestError(400, "'image' is not base64") from None
        vector = encoder.encode_images([decode_upload(data, max_pixels)])[0]
    elif request.image_url:
        raise RequestError(400, "image_url is not fetched by this server; send the image's bytes as 'image'")
    else:
        vector = np.asarray(request.embedding_input, dtype=np.float32)
        if vector.shape != (retriever.gallery.dim,) or not np.isfinite(vector).all():
            raise RequestError(400, f"embedding_input must be {retriever.gallery.dim} finite numbers")
    vector = np.asarray(vector, dtype=np.float32)
    norm = float(np.linalg.norm(vector))
    return vector / norm if norm > 0 else vector
