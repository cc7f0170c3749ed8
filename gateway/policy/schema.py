"""The policy bundle's file formats, strictly validated (unknown keys are errors).

Legal teams edit these files; every field is documented in docs/policy-files.md.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from gateway.domain import CATEGORIES, INTENDED_USES

SeverityName = Literal["low", "medium", "high"]
ActionLevel = Literal["low", "medium", "high", "never"]
Status = Literal["allowed", "denied", "conditional", "unknown"]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Thresholds(Strict):
    """Score at or above which a category reaches each severity."""

    low: float = Field(ge=0.0, le=1.0)
    medium: float = Field(ge=0.0, le=1.0)
    high: float = Field(ge=0.0, le=1.0)

    @model_validator(mode="after")
    def _ordered(self) -> Thresholds:
        if not self.low <= self.medium <= self.high:
            raise ValueError("thresholds must satisfy low <= medium <= high")
        return self


class DirectionThresholds(Strict):
    prompt: Thresholds
    image: Thresholds


class ImageActions(Strict):
    block_at: ActionLevel
    quarantine_at: ActionLevel = "never"


class TextActions(Strict):
    block_at: ActionLevel


class Actions(Strict):
    prompt: TextActions
    negative_prompt: TextActions
    image: ImageActions


class CategoryPolicy(Strict):
    description: str
    thresholds: DirectionThresholds
    actions: Actions
    terms: list[str] = Field(default_factory=list)
    exemplars: list[str] = Field(default_factory=list)

    @field_validator("terms", "exemplars")
    @classmethod
    def _no_blank(cls, v: list[str]) -> list[str]:
        if any(not s.strip() for s in v):
            raise ValueError("entries must not be blank")
        return v


class ImageConcept(Strict):
    text: str = Field(min_length=1)
    category: str
    threshold: float = Field(ge=-2.0, le=2.0)
    special_care: bool = False

    @field_validator("category")
    @classmethod
    def _known(cls, v: str) -> str:
        if v not in CATEGORIES:
            raise ValueError(f"unknown category {v!r}; known: {', '.join(CATEGORIES)}")
        return v


class ImagePolicy(Strict):
    special_care_adjustment: float = Field(default=0.01, ge=0.0, le=0.5)
    nsfw_detector_category: str = "sexual"
    concepts: list[ImageConcept] = Field(default_factory=list)


class ContentPolicy(Strict):
    schema_version: Literal[1]
    exemplar_scale: tuple[float, float] = Field(
        default=(0.25, 0.75),
        description="cosine similarity mapped linearly onto score 0..1 between these two values",
    )
    categories: dict[str, CategoryPolicy]
    image: ImagePolicy = Field(default_factory=ImagePolicy)

    @field_validator("categories")
    @classmethod
    def _all_categories(cls, v: dict[str, CategoryPolicy]) -> dict[str, CategoryPolicy]:
        unknown = sorted(set(v) - set(CATEGORIES))
        missing = [c for c in CATEGORIES if c not in v]
        if unknown:
            raise ValueError(f"unknown categories: {', '.join(unknown)}")
        if missing:
            raise ValueError(f"missing categories: {', '.join(missing)}")
        return v


class Condition(Strict):
    fact: str
    op: Literal["<", "<=", ">", ">=", "==", "!=", "present", "true"]
    value: Any = None
    clause: str | None = None


class UsePermission(Strict):
    status: Status
    clause: str | None = None
    any_of: list[list[str]] = Field(default_factory=list)
    note: str | None = None
    legal_flag: str | None = Field(
        default=None, description="where the text is ambiguous: the reading chosen, and why"
    )


AppliesTo = Literal["model", "derivatives", "outputs"]
_ALL_TARGETS: tuple[AppliesTo, ...] = ("model", "derivatives", "outputs")


class UseRestriction(Strict):
    ref: str
    clause: str | None = None
    url: str | None = None
    items: list[str] = Field(default_factory=list)
    applies_to: list[AppliesTo] = Field(default_factory=lambda: list(_ALL_TARGETS))
    note: str | None = None


class OutputRights(Strict):
    ownership: Literal["licensee", "licensor_claims_none", "not_stated"]
    commercial_use: Status
    attribution: str | None = None
    may_train_other_models: bool
    derivatives_inherit_restrictions: bool
    use_restrictions: list[UseRestriction] = Field(default_factory=list)
    ai_disclosure: Literal["required", "law_dependent", "not_required"] = "law_dependent"
    clause: str | None = None
    legal_flag: str | None = None
    commercial_use_follows: str | None = Field(
        default=None,
        description="an intended use: when the tenant may use the model for it, outputs are "
        "commercially usable (e.g. a paid licence or met conditions)",
    )


class Obligation(Strict):
    id: str
    text: str
    when: Literal["always", "distribute", "hosted_service", "commercial"] = "always"
    clause: str | None = None


class DerivativeRules(Strict):
    carry_licence: bool
    carry_use_restrictions: bool
    clause: str | None = None


class Licence(Strict):
    schema_version: Literal[1]
    id: str
    name: str
    spdx: str
    url: str | None = None
    text_sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")
    review: dict[str, Any] = Field(default_factory=dict)
    legal_notes: list[str] = Field(default_factory=list)
    conditions: dict[str, Condition] = Field(default_factory=dict)
    use_purposes: dict[str, UsePermission]
    output_rights: OutputRights
    obligations: list[Obligation] = Field(default_factory=list)
    derivatives: DerivativeRules | None = None

    @model_validator(mode="after")
    def _consistent(self) -> Licence:
        unknown = sorted(set(self.use_purposes) - set(INTENDED_USES))
        if unknown:
            raise ValueError(f"unknown intended uses in use_purposes: {', '.join(unknown)}")
        for use, perm in self.use_purposes.items():
            for group in perm.any_of:
                for name in group:
                    if name not in self.conditions:
                        raise ValueError(f"use_purposes.{use}: unknown condition {name!r}")
        return self


class ModelSource(Strict):
    kind: Literal["demo_tiny", "pipeline_dir", "single_file", "lora"]
    path: str
    pipeline_class: str | None = None
    config: str | None = Field(default=None, description="diffusers config dir for single_file")


class StepBounds(Strict):
    min: int = Field(ge=1)
    max: int = Field(ge=1, le=500)
    default: int = Field(ge=1)

    @model_validator(mode="after")
    def _ordered(self) -> StepBounds:
        if not self.min <= self.default <= self.max:
            raise ValueError("steps must satisfy min <= default <= max")
        return self


class MemoryOptions(Strict):
    dtype: Literal["float32", "float16", "bfloat16"] = "float32"
    attention_slicing: bool = False
    vae_tiling: bool = False
    cpu_offload: bool = False
    max_batch: int | None = Field(
        default=None,
        ge=1,
        le=64,
        description="most images in one pipeline call; default: the gateway's (8, measured)",
    )
    compile: bool = Field(
        default=False,
        description="torch.compile the UNet (CUDA graphs on a GPU), warmed up at start for "
        "every declared size and batch size",
    )


class ModelEntry(Strict):
    licence: str
    base: str | None = Field(
        default=None, description="the model this one derives from (fine-tune, LoRA adapter)"
    )
    use_restrictions: list[UseRestriction] = Field(
        default_factory=list, description="the derivative's own, e.g. rights in training images"
    )
    description: str = ""
    source: ModelSource
    pins: dict[str, str] | Literal["manifest"] = Field(default_factory=dict)
    sizes: list[str]
    steps: StepBounds
    options: MemoryOptions = Field(default_factory=MemoryOptions)

    @field_validator("sizes")
    @classmethod
    def _sizes(cls, v: list[str]) -> list[str]:
        for s in v:
            w, _, h = s.partition("x")
            if not (w.isdigit() and h.isdigit() and int(w) % 8 == 0 and int(h) % 8 == 0):
                raise ValueError(f"size {s!r} must be WxH with multiples of 8")
        return v

    @field_validator("pins")
    @classmethod
    def _pins(cls, v: dict[str, str] | str) -> dict[str, str] | str:
        if isinstance(v, dict):
            for path, digest in v.items():
                if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
                    raise ValueError(f"pin for {path!r} must be a lowercase hex sha256")
        return v


class ModelRegistry(Strict):
    schema_version: Literal[1]
    models: dict[str, ModelEntry]

    @model_validator(mode="after")
    def _bases(self) -> ModelRegistry:
        for model_id, entry in self.models.items():
            if entry.source.kind == "lora" and entry.base is None:
                raise ValueError(f"{model_id}: a lora model needs a base")
            seen = [model_id]
            current = entry
            while current.base is not None:
                if current.base not in self.models:
                    raise ValueError(f"{seen[-1]}: base {current.base!r} is not registered")
                if current.base in seen:
                    raise ValueError(f"{model_id}: base chain loops: {' -> '.join(seen)}")
                seen.append(current.base)
                current = self.models[current.base]
        return self

    def chain(self, model_id: str) -> list[str]:
        """The model, then its base, its base's base, ... (validated acyclic)."""
        out = [model_id]
        while (base := self.models[out[-1]].base) is not None:
            out.append(base)
        return out


class PolicyTestExpect(Strict):
    decision: Literal["allow", "deny"]
    reasons: list[str] = Field(default_factory=list, description="reason codes that must appear")
    clauses: list[str] = Field(default_factory=list, description="clauses that must be cited")
    rights: dict[str, Any] = Field(default_factory=dict, description="fields that must match")


class PolicyTestCase(Strict):
    name: str
    model: str
    intended_use: str
    facts: dict[str, Any] = Field(default_factory=dict)
    expect: PolicyTestExpect

    @field_validator("intended_use")
    @classmethod
    def _use(cls, v: str) -> str:
        if v not in INTENDED_USES:
            raise ValueError(f"unknown intended use {v!r}")
        return v


class ContentTestCase(Strict):
    """A prompt and what the content policy must do with it (``content_cases``)."""

    prompt: str = Field(min_length=1)
    expect: Literal["allowed", "blocked"]
    categories: list[str] = Field(
        default_factory=list, description="categories that must be among those that block"
    )
    not_categories: list[str] = Field(
        default_factory=list, description="categories that must not block"
    )
    name: str | None = None
    note: str | None = None

    @model_validator(mode="after")
    def _consistent(self) -> ContentTestCase:
        unknown = sorted(set(self.categories + self.not_categories) - set(CATEGORIES))
        if unknown:
            raise ValueError(f"unknown categories: {', '.join(unknown)}")
        if self.expect == "allowed" and self.categories:
            raise ValueError("an allowed prompt cannot name categories that block it")
        return self


class PolicyTests(Strict):
    schema_version: Literal[1]
    cases: list[PolicyTestCase] = Field(default_factory=list)
    content_cases: list[ContentTestCase] = Field(default_factory=list)


class UseEntry(Strict):
    description: str


class Uses(Strict):
    schema_version: Literal[1]
    default: str
    uses: dict[str, UseEntry]

    @model_validator(mode="after")
    def _known(self) -> Uses:
        unknown = sorted(set(self.uses) - set(INTENDED_USES))
        if unknown:
            raise ValueError(f"unknown intended uses: {', '.join(unknown)}")
        if self.default not in self.uses:
            raise ValueError(f"default {self.default!r} is not one of the listed uses")
        return self
