"""Evaluating the prompt head: obfuscation rewrites, AUROC, thresholds, flag rates."""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from gateway.domain import CATEGORIES
from gateway.safety.normalize import normalise
from gateway.safety.prompt_head import PromptHead
from gateway.safety.prompt_head_fit import F32, F64, Data, Mask, embed

_HOMOGLYPHS = str.maketrans(
    {"a": "а", "e": "е", "o": "о", "p": "р", "c": "с", "x": "х", "i": "і", "y": "у"}
)
_LEET = str.maketrans({"a": "4", "e": "3", "i": "1", "o": "0", "s": "5", "t": "7"})


def _trigger_words(text: str, rewrite: Callable[[str], str], n: int = 3) -> str:
    words = sorted(set(re.findall(r"[A-Za-z]{4,}", text)), key=lambda w: (-len(w), w))[:n]
    for w in words:
        new = rewrite(w)
        text = re.sub(rf"\b{w}\b", new.replace("\\", "\\\\"), text)
    return text


def _mixed(text: str, rng: random.Random) -> str:
    tricks = [f for name, f in REWRITES.items() if name != "mixed"]
    return "".join(rng.choice(tricks)(w) if len(w) >= 4 else w for w in re.split(r"(\W+)", text))


REWRITES: dict[str, Callable[[str], str]] = {
    "homoglyphs": lambda t: _trigger_words(t, lambda w: w.translate(_HOMOGLYPHS)),
    "zero_width": lambda t: _trigger_words(t, lambda w: "\u200b".join(w)),
    "leetspeak": lambda t: _trigger_words(t, lambda w: w.lower().translate(_LEET)),
    "spaced": lambda t: _trigger_words(t, lambda w: " ".join(w)),
    "dotted": lambda t: _trigger_words(t, lambda w: ".".join(w)),
    "repeated": lambda t: _trigger_words(
        t, lambda w: "".join(ch * 3 if ch in "aeiou" else ch for ch in w)
    ),
    "casing": lambda t: "".join(ch.upper() if i % 2 else ch.lower() for i, ch in enumerate(t)),
}


def auroc(pos: F64, neg: F64) -> float:
    from sklearn.metrics import roc_auc_score

    y = np.r_[np.ones(len(pos)), np.zeros(len(neg))]
    return float(roc_auc_score(y, np.r_[pos, neg]))


def loosest_threshold(
    score: F32, base: Mask, groups: list[tuple[Mask, float]], candidates: F64
) -> float:
    """The lowest candidate threshold on ``score`` such that, with the rows already flagged
    (``base``), every ``(rows, max_rate)`` group stays within its rate (candidates
    ascending; the highest one if none does)."""
    for th in candidates:
        hit = base | (score >= th)
        if all(hit[rows].mean() <= rate for rows, rate in groups if rows.any()):
            return round(float(th), 4)
    return round(float(candidates[-1]), 4)


def flag(scores: F32, thresholds: dict[str, float]) -> Mask:
    hit = np.zeros(len(scores), dtype=bool)
    for cat, th in thresholds.items():
        hit |= scores[:, CATEGORIES.index(cat)] >= th
    return hit


def rates(hit: Mask, data: Data) -> dict[str, float]:
    return {
        "unsafe": round(float(hit[data.unsafe].mean()), 4),
        "safe": round(float(hit[data.safe].mean()), 4),
        "coco": round(float(hit[data.is_coco].mean()), 4),
    }


def obfuscation_survival(
    data: Data,
    folds: list[tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]],
    heads: list[PromptHead],
    scores: F32,
    block: dict[str, float],
    cache: Path | None,
    seed: int,
) -> dict[str, Any]:
    """Share of unsafe prompts flagged in clean form (by their fold's head) that stay flagged
    after each rewrite; the rewritten text goes through the gateway's normaliser first."""
    hit = flag(scores, block)
    rng = random.Random(seed)
    jobs: list[tuple[int, str, str]] = []  # (fold, rewrite, clean text)
    for f, (_, te) in enumerate(folds):
        for i in te:
            if data.unsafe[i] and hit[i]:
                for name, rewrite in REWRITES.items():
                    jobs.append((f, name, normalise(rewrite(data.originals[i])).clean))
                jobs.append((f, "mixed", normalise(_mixed(data.originals[i], rng)).clean))
    texts = [t for _, _, t in jobs]
    emb = embed(texts, cache)
    kept: dict[str, list[bool]] = {}
    for f, head in enumerate(heads):
        rows = [j for j, job in enumerate(jobs) if job[0] == f]
        if not rows:
            continue
        s = head.score([texts[j] for j in rows], emb[rows])
        for j, h in zip(rows, flag(s, block), strict=True):
            kept.setdefault(jobs[j][1], []).append(bool(h))
    out: dict[str, Any] = {name: round(float(np.mean(v)), 4) for name, v in kept.items()}
    out["overall"] = round(float(np.mean([np.mean(v) for v in kept.values()])), 4)
    out["flagged_clean_prompts"] = int((data.unsafe & hit).sum())
    return out
