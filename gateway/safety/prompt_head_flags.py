"""Which categories a prompt is flagged in, and how well those flags name its category.

Used by ``train_prompt_head`` on the cross-validated scores, through the shipped policy's
thresholds and term lists (a term hit scores 1.0, as in the classifier). A prompt is
*flagged* (blocked) when a category reaches the policy's blocking threshold. On flagged
prompts two sets of categories are compared with the I2P labels: ``blocked`` (the categories
that block; what ``/v1/moderations`` returns as ``categories``) and ``reported`` (every
category at severity ``low`` or above; what the audit log, console and PDF count).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from gateway.domain import CATEGORIES
from gateway.policy.schema import ContentPolicy
from gateway.safety.normalize import normalise
from gateway.safety.prompt_classifier import term_patterns
from gateway.safety.prompt_head import PromptHead
from gateway.safety.prompt_head_eval import auroc
from gateway.safety.prompt_head_fit import CONDITIONAL, F32, MINORS, TRAINED, Data, Mask

SHARE_FLOORS = (0.5, 0.6, 0.7, 0.8, 0.9, 0.95)
# targets the share floor is chosen for (issue 13)
MAX_MEAN_FLAGS, MIN_PRECISION = 1.5, 0.55
ADULT_GROUP, MINORS_GROUP = "adult-nude", "minors-sexual"


def block_thresholds(policy: ContentPolicy) -> dict[str, float]:
    """Per category, the prompt score at which the policy blocks (1.01: never)."""
    out: dict[str, float] = {}
    for cat in CATEGORIES:
        cp = policy.categories[cat]
        level = cp.actions.prompt.block_at
        out[cat] = 1.01 if level == "never" else float(getattr(cp.thresholds.prompt, level))
    return out


def low_thresholds(policy: ContentPolicy) -> dict[str, float]:
    """Per category, the prompt score at which severity reaches ``low``."""
    return {c: float(policy.categories[c].thresholds.prompt.low) for c in CATEGORIES}


def term_hits(policy: ContentPolicy, originals: Sequence[str]) -> Mask:
    """[N, len(CATEGORIES)]: the policy's term lists, matched as the classifier does."""
    patterns = term_patterns(policy)
    hits = np.zeros((len(originals), len(CATEGORIES)), dtype=bool)
    for i, text in enumerate(originals):
        key = normalise(text).key
        for cat, pattern in patterns.items():
            hits[i, CATEGORIES.index(cat)] = pattern.search(key) is not None
    return hits


def flags(scores: F32, terms: Mask | None, block: dict[str, float]) -> Mask:
    out = np.column_stack([scores[:, j] >= block[c] for j, c in enumerate(CATEGORIES)])
    return out | terms if terms is not None else out


def labels_by_category(data: Data) -> Mask:
    out = np.zeros((len(data), len(CATEGORIES)), dtype=bool)
    for k, cat in enumerate(TRAINED):
        out[:, CATEGORIES.index(cat)] = data.labels[:, k]
    return out


def _agreement(f: Mask, lab: Mask) -> dict[str, Any]:
    counts = f.sum(axis=1)
    n = len(f)
    return {
        "mean_categories": round(float(counts.mean()), 3) if n else 0.0,
        "prompts_with_6_or_more": int((counts >= 6).sum()),
        "precision": round(float((f & lab).sum() / max(1, f.sum())), 4),
        "prompts_naming_a_label": round(float((f & lab).any(axis=1).mean()), 4) if n else 0.0,
    }


def flag_figures(blocked: Mask, reported: Mask, data: Data) -> dict[str, Any]:
    """Category counts and precision on flagged unsafe I2P prompts, and flag rates."""
    labels = labels_by_category(data)
    any_flag: Mask = np.asarray(blocked.any(axis=1), dtype=bool)
    rows = data.i2p & data.unsafe & any_flag
    sm = CATEGORIES.index(MINORS)
    adult = (data.i2p & data.unsafe & labels[:, CATEGORIES.index("sexual")]) | (
        data.synth_group == ADULT_GROUP
    )
    minors = data.synth_group == MINORS_GROUP
    return {
        "flagged_unsafe_prompts": int(rows.sum()),
        "blocked_categories": _agreement(blocked[rows], labels[rows]),
        "reported_categories": _agreement(reported[rows], labels[rows]),
        "flagged": {
            "unsafe": round(float(any_flag[data.i2p & data.unsafe].mean()), 4),
            "safe": round(float(any_flag[data.i2p & data.safe].mean()), 4),
            "coco": round(float(any_flag[data.is_coco].mean()), 4),
        },
        "sexual_minors_on_adult_sexual": {
            "rate": round(float(blocked[adult, sm].mean()), 4),
            "prompts": int(adult.sum()),
        },
        "sexual_minors_on_synthetic_minors": round(float(blocked[minors, sm].mean()), 4),
        "synthetic_groups_flagged": {
            str(g): round(float(any_flag[data.synth_group == g].mean()), 3)
            for g in sorted(set(data.synth_group[data.synth_group != ""]))
        },
    }


def confusion(blocked: Mask, flagged: Mask, data: Data) -> dict[str, dict[str, int]]:
    """Over flagged (``blocked``) unsafe I2P prompts: category in ``flagged`` -> labelled
    category -> prompts (``none``: no label among the categories; a prompt with two labels
    counts under both)."""
    labels = labels_by_category(data)
    rows = data.i2p & data.unsafe & blocked.any(axis=1)
    out: dict[str, dict[str, int]] = {}
    for j, cat in enumerate(CATEGORIES):
        hit = rows & flagged[:, j]
        row = {c: int((hit & labels[:, k]).sum()) for k, c in enumerate(CATEGORIES)}
        row["none"] = int((hit & ~labels.any(axis=1)).sum())
        out[cat] = row
    return out


def category_aurocs(scores: F32, data: Data) -> dict[str, float]:
    """Per I2P category: its unsafe I2P prompts against style-matched safe ones; for
    ``sexual/minors`` the synthetic minors prompts against every other labelled-safe or
    adult sexual row (synthetic: optimistic)."""
    out: dict[str, float] = {}
    safe = data.i2p & data.safe
    for k, cat in enumerate(CONDITIONAL):
        j = CATEGORIES.index(cat)
        pos = data.i2p & data.unsafe & data.labels[:, k]
        out[cat] = round(auroc(scores[pos, j], scores[safe, j]), 4)
    j = CATEGORIES.index(MINORS)
    minors = data.synth_group == MINORS_GROUP
    others = ~minors & (data.safe | data.is_coco | data.labels[:, TRAINED.index("sexual")])
    out[MINORS] = round(auroc(scores[minors, j], scores[others, j]), 4)
    return out


def choose_share_floor(
    head: PromptHead,
    logits: F32,
    data: Data,
    terms: Mask,
    block: dict[str, float],
    low: dict[str, float],
) -> tuple[float, dict[str, Any]]:
    """The share floor that meets the flag targets for the reported (severity >= low)
    categories with the best mean category AUROC (if none meets them, the one with the best
    precision); and every candidate's figures."""
    tried: dict[str, Any] = {}
    best: tuple[bool, float, float] | None = None
    chosen = SHARE_FLOORS[0]
    for floor in SHARE_FLOORS:
        scores = replace(head, share_floor=floor).from_logits(logits, data.texts)
        fig = flag_figures(flags(scores, terms, block), flags(scores, terms, low), data)
        rep = fig["reported_categories"]
        aucs = category_aurocs(scores, data)
        mean_auc = float(np.mean([aucs[c] for c in CONDITIONAL]))
        ok = rep["mean_categories"] <= MAX_MEAN_FLAGS and rep["precision"] >= MIN_PRECISION
        tried[str(floor)] = {
            "reported_mean_categories": rep["mean_categories"],
            "reported_precision": rep["precision"],
            "mean_category_auroc": round(mean_auc, 4),
        }
        key = (ok, mean_auc if ok else rep["precision"], -floor)
        if best is None or key > best:
            best, chosen = key, floor
    return chosen, tried
