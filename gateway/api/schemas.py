"""Request and response bodies of the HTTP API (OpenAI-shaped where OpenAI has a shape)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import Path
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator

IntendedUse = Literal[
    "research", "internal_business", "commercial", "hosted_service", "train_other_model"
]


MAX_ROW_ID = 2**31 - 1
"""Integer primary keys are 32-bit signed in PostgreSQL: larger ids are refused with 422."""

RowId = Annotated[int, Path(ge=1, le=MAX_ROW_ID, description="a policy version id")]


def _iso_text(value: object) -> object:
    if not isinstance(value, str | datetime):
        raise ValueError("must be an ISO 8601 date-time string")
    return value


def _integral(value: object) -> object:
    return int(value) if isinstance(value, float) and value.is_integer() else value


INTEGRAL = BeforeValidator(_integral)
Int = Annotated[int, INTEGRAL]
"""A strict JSON integer: 3 and 3.0 (the same JSON Schema integer), never "3" or true.

Bounds on an optional one go before ``INTEGRAL`` (``Annotated[int, Field(ge=..), INTEGRAL]``),
or pydantic writes them into the schema as ``ge``/``le``, which JSON Schema ignores."""

Timestamp = Annotated[datetime, BeforeValidator(_iso_text)]
"""An RFC 3339 date-time in a JSON body (no Unix numbers, which pydantic would coerce)."""


class GovernanceIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    intended_use: IntendedUse | None = None


_SPACE = "".join(f"\\u{c:04x}" for c in range(0x10000) if chr(c).isspace())
NO_NUL = r"^[^\x00]*$"
"""Text fields hold no NUL (PostgreSQL cannot store one)."""
NOT_BLANK = rf"^[^\x00]*[^\x00{_SPACE}][^\x00]*$"
"""No NUL and at least one character that ``str.isspace`` does not call white space."""


class ImageGenerationBody(BaseModel):
    """``POST /v1/images/generations``: OpenAI's fields plus ours."""

    model_config = ConfigDict(extra="forbid", strict=True)

    model: str = Field(min_length=1, max_length=200)
    prompt: str = Field(min_length=1, max_length=4000, pattern=NOT_BLANK)
    n: Int = Field(default=1, ge=1, le=4)
    size: str | None = Field(default=None, pattern=r"^[0-9]{1,5}x[0-9]{1,5}$")
    response_format: Literal["b64_json", "url"] = "b64_json"
    user: str | None = Field(default=None, max_length=256, pattern=NO_NUL)
    negative_prompt: str | None = Field(default=None, max_length=4000, pattern=NO_NUL)
    seed: Annotated[int, Field(ge=0, le=2**32 - 1), INTEGRAL] | None = None
    steps: Annotated[int, Field(ge=1, le=500), INTEGRAL] | None = None
    quality: str | None = Field(default=None, max_length=20, description="accepted, ignored")
    style: str | None = Field(default=None, max_length=20, description="accepted, ignored")
    output_format: Literal["png", "jpeg", "webp"] = Field(
        default="png", description="file format; each carries the C2PA manifest and watermark"
    )
    governance: GovernanceIn | None = None

    @field_validator("prompt", "negative_prompt", "user", mode="before")
    @classmethod
    def _no_nul(cls, v: object) -> object:
        """Clearer messages than the patterns' (which say the same to the schema's readers)."""
        if isinstance(v, str) and "\x00" in v:
            raise ValueError("must not contain NUL characters")
        return v

    @field_validator("prompt", mode="before")
    @classmethod
    def _not_blank(cls, v: object) -> object:
        if isinstance(v, str) and v and not v.strip():
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


class ErrorInfo(BaseModel):
    """OpenAI's error object; some codes add fields (``categories``, ``reasons``, ...)."""

    model_config = ConfigDict(extra="allow")
    code: str
    message: str
    type: str
    param: str | None
    decision_id: str | None = None


class ErrorBody(BaseModel):
    error: ErrorInfo
