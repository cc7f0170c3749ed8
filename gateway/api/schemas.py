"""Request and response bodies of the HTTP API (OpenAI-shaped where OpenAI has a shape)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

IntendedUse = Literal[
    "research", "internal_business", "commercial", "hosted_service", "train_other_model"
]


class GovernanceIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    intended_use: IntendedUse | None = None


class ImageGenerationBody(BaseModel):
    """``POST /v1/images/generations``: OpenAI's fields plus ours."""

    model_config = ConfigDict(extra="forbid", strict=True)

    model: str = Field(min_length=1, max_length=200)
    prompt: str = Field(min_length=1, max_length=4000)
    n: int = Field(default=1, ge=1, le=4)
    size: str | None = Field(default=None, pattern=r"^[0-9]{1,5}x[0-9]{1,5}$")
    response_format: Literal["b64_json", "url"] = "b64_json"
    user: str | None = Field(default=None, max_length=256)
    negative_prompt: str | None = Field(default=None, max_length=4000)
    seed: int | None = Field(default=None, ge=0, le=2**32 - 1)
    steps: int | None = Field(default=None, ge=1, le=500)
    quality: str | None = Field(default=None, max_length=20, description="accepted, ignored")
    style: str | None = Field(default=None, max_length=20, description="accepted, ignored")
    output_format: Literal["png", "jpeg", "webp"] = Field(
        default="png", description="file format; each carries the C2PA manifest and watermark"
    )
    governance: GovernanceIn | None = None

    @field_validator("prompt", "negative_prompt", "user")
    @classmethod
    def _no_nul(cls, v: str | None) -> str | None:
        if v is not None and "\x00" in v:
            raise ValueError("must not contain NUL characters")
        return v

    @field_validator("prompt")
    @classmethod
    def _not_blank(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("must not be blank")
        return v


class ImageData(BaseModel):
    b64_json: str | None = None
    url: str | None = None
    revised_prompt: str | None = None
    finish_reason: Literal["SUCCESS", "CONTENT_FILTERED"]
    error: dict[str, Any] | None = None


class ImagesResponse(BaseModel):
    created: int
    data: list[ImageData]
    governance: dict[str, Any]


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str
    licence: str
    available: bool
    unavailable_reason: str | None
    sizes: list[str]
    steps: dict[str, int]
    weights_sha256: str | None


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class ErrorBody(BaseModel):
    error: dict[str, Any]
