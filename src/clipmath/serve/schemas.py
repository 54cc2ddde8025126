"""Request and response bodies of the HTTP API (they make up its OpenAPI schema at ``/openapi.json``)."""

from __future__ import annotations

import os
from typing import Annotated
from urllib.parse import quote

from pydantic import BaseModel, ConfigDict, Field, PlainValidator, WithJsonSchema, model_validator

from clipmath.serve.engine import ImageKey

MAX_K = 1000


def item_url(kind: str, item_id: str) -> str:
    """``/api/<kind>/<id>`` with the id's file-system bytes percent-encoded (any name, even not UTF-8)."""
    return f"/api/{kind}/{quote(os.fsencode(item_id), safe='/')}"


def _file_name_text(max_length: int) -> object:
    """A string that may hold lone surrogates: how a file name that is not valid UTF-8 reads in Python (and in
    JSON, as ``\\udcXX`` escapes). Pydantic's own ``str`` refuses those, so gallery ids would be unusable."""

    def check(value: object) -> str:
        if not isinstance(value, str):
            raise ValueError("must be a string")
        if not 1 <= len(value) <= max_length:
            raise ValueError(f"must hold 1 to {max_length} characters")
        return value

    return Annotated[
        str, PlainValidator(check), WithJsonSchema({"type": "string", "minLength": 1, "maxLength": max_length})
    ]


GalleryId = _file_name_text(1024)
ExpressionText = _file_name_text(2000)


class ImageRef(BaseModel):
    """An image: a gallery id (its path relative to the store's image folder) or an earlier upload's id."""

    model_config = ConfigDict(extra="forbid")

    gallery_id: GalleryId | None = Field(None, examples=["coco/COCO_val2014_000000060623.jpg"])  # type: ignore[valid-type]
    upload_id: str | None = Field(None, pattern=r"^[0-9a-f]{32}$", description="From POST /api/uploads.")

    @model_validator(mode="after")
    def _exactly_one(self) -> ImageRef:
        if (self.gallery_id is None) == (self.upload_id is None):
            raise ValueError("give exactly one of gallery_id or upload_id")
        return self

    def key(self) -> ImageKey:
        return ImageKey(gallery_id=self.gallery_id, upload_id=self.upload_id)


class SearchRequest(BaseModel):
    """A composed query. Which fields are needed depends on the method (see GET /api/info)."""

    model_config = ConfigDict(extra="forbid")

    reference: ImageRef | None = Field(None, description="Reference image (excluded from its own results).")
    text: str | None = Field(
        None, max_length=500, description="Modification text (methods sum, text).", examples=["with a dog"]
    )
    source: str | None = Field(
        None, max_length=200, description="'from' word of a SIMAT delta (method delta).", examples=["cat"]
    )
    target: str | None = Field(
        None, max_length=200, description="'to' word of a SIMAT delta (method delta).", examples=["dog"]
    )
    lam: float = Field(1.0, ge=-10, le=10, allow_inf_nan=False, description="Strength λ of the delta.")
    expression: ExpressionText | None = Field(  # type: ignore[valid-type]
        None,
        description="Method expr: weighted terms over gallery ids, upload:<id> and quoted texts, "
        "e.g. +arithmetic/woman2.jpg +arithmetic/king2.jpg -arithmetic/man2.jpg",
    )
    method: str | None = Field(None, max_length=64, description="Compose method; inferred from the fields if omitted.")
    k: int | None = Field(None, ge=1, le=MAX_K, description="Number of results (server default if omitted).")


class Hit(BaseModel):
    rank: int = Field(description="1 = best.")
    id: str = Field(description="Gallery id: path relative to the store's image folder.")
    score: float = Field(description="Cosine similarity between the composed query and the image.")
    path: str = Field(description="The image file on the server.")
    thumbnail_url: str
    image_url: str


class SearchResponse(BaseModel):
    model: str = Field(description="Which model ran (with a warning if its weights are random).")
    method: str
    k: int
    store_items: int = Field(description="Images in the committed store state that answered.")
    results: list[Hit]
    milliseconds: float = Field(description="The whole request, as the server measured it.")
    timings: dict[str, float] = Field(
        default_factory=dict,
        description="Milliseconds by step: queue (waiting for the model worker), encode (encoding and composing the "
        "batch this query was in), search (the index).",
    )


class UploadResponse(BaseModel):
    upload_id: str
    width: int
    height: int
    model: str


class Health(BaseModel):
    status: str = Field(description="ok, or degraded when the index back end (e.g. Milvus) does not answer.")
    model: str
    store_items: int
    backend: dict | None = Field(default=None, description="The index back end's state (milvus:URI kinds).")


class StoreInfo(BaseModel):
    model: str
    model_id: str
    pretrained: bool
    dim: int
    preprocessing: str
    index: str
    store_items: int
    skipped_files: int
    created: str
    methods: dict[str, str]
    default_k: int
    max_k: int
    max_upload_bytes: int
    max_pixels: int
    captioning: str | None = Field(description="The captioner's label, or null if captions are not available.")
    difference_captioning: str | None = Field(
        default=None, description="The difference captioner's label, or null if difference captions are not available."
    )
    token_required: bool


class Item(BaseModel):
    id: str
    thumbnail_url: str


class ItemsPage(BaseModel):
    total: int = Field(description="Items matching the filter.")
    offset: int
    items: list[Item]


class CaptionRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    image: ImageRef


class DifferenceRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    before: ImageRef
    after: ImageRef


class CaptionResponse(BaseModel):
    caption: str
    captioner: str


class ErrorResponse(BaseModel):
    detail: str
