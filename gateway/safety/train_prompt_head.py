"""Rebuild the prompt head from the development data and report cross-validated figures.

    python -m gateway.safety.train_prompt_head [--data data/dev] \
        --out gateway/safety/artefacts/prompt_head.npz [--cache /tmp/emb_cache.npz]

Deterministic for a given data set, seed and library versions (several minutes on 2 cores).
Every text is normalised exactly as the gateway does (``normalise(text).clean``) before any
feature is computed. Data: I2P and COCO development rows plus the project's synthetic set
(``data/dev/synthetic-adult-minors.csv``: adult and minor-related prompts, everyday
look-alikes).

Model (see ``prompt_head.py`` for inference):
1. base logistic regressions on four feature families (MiniLM embedding, RBF kernel to the
   training prompts' embeddings, TF-IDF word unigrams, TF-IDF within-word character 3-6
   grams):
   - generic "unsafe": every labelled row, soft target ``pct / 100``;
   - per category: rows labelled with it (soft target) against safe rows (<= 10 %); the
     embedding and kernel families also get a variant with COCO captions as negatives;
   - conditional per category: only rows with an I2P category and >= 30 % inappropriate
     images, one-vs-rest on the labels (what *kind* of unsafe);
   - ``sexual/minors``: the synthetic minors rows against every other row;
2. stacking logistic regressions on the base models' out-of-fold logits: the ``unsafe``
   column on all generic and per-category logits (unsafe >= 60 % vs safe <= 10 % and COCO
   weighted 0.03); each conditional column on that category's conditional logits; the
   minors column on the minors and sexual logits, adult sexual rows weighted 5;
3. calibration on the cross-validated scores: ``sexual/minors``' threshold is one logit
   above the lowest that flags at most 0.5 % of adult sexual prompts, 1 % of style-matched
   safe and 0.1 % of COCO, mapped to 0.45 (the policy's blocking ``low``); the unsafe
   column's block threshold the loosest that keeps all flags (terms and minors included)
   within 15 % of style-matched safe and 0.5 % of COCO (low: 35 % / 3 %, at most half the
   block threshold), mapped to 0.92 / 0.50;
4. the share floor (how close to the top category's conditional probability another one's
   must be to count as evidenced, see ``prompt_head.py``) is chosen so that flagged unsafe
   prompts report <= 1.5 categories and >= 55 % of reported categories match a label, with
   the best mean per-category AUROC.
All stages are linear in the features, so they collapse into one weight matrix per family.

Cross-validation: 5 folds stratified by outcome and grouped by normalised text; the stack is
nested (fold k's stack is fitted on the other folds' out-of-fold logits), so every reported
figure comes from a head that never saw the row. Thresholds and the share floor are chosen on
those scores. Headline figures use I2P and COCO rows only, as before; flags include the
shipped policy's term lists (``--policy``).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from gateway.domain import CATEGORIES
from gateway.policy.bundle import load_bundle
from gateway.safety.prompt_head import (
    UNSAFE,
    PromptHead,
    char_wb_ngrams,
    default_head_path,
    word_ngrams,
)
from gateway.safety.prompt_head_eval import auroc, loosest_threshold, obfuscation_survival
from gateway.safety.prompt_head_fit import (
    BLOCK_COCO_RATE,
    BLOCK_SAFE_RATE,
    CHAR_RANGE,
    COLUMNS,
    FOLDS,
    LOW_COCO_RATE,
    LOW_SAFE_RATE,
    MINORS,
    MINORS_AT,
    MINORS_MARGIN,
    SCALE_BLOCK,
    SCALE_LOW,
    WORD_HIGH,
    BaseModels,
    Data,
    Featuriser,
    Stack,
    Target,
    base_targets,
    calibrate,
    collapse,
    embed,
)
from gateway.safety.prompt_head_flags import (
    ADULT_GROUP,
    block_thresholds,
    category_aurocs,
    choose_share_floor,
    confusion,
    flag_figures,
    flags,
    low_thresholds,
    term_hits,
)


def _sigmoid(z: Any) -> Any:
    return 1.0 / (1.0 + np.exp(-np.asarray(z, dtype=np.float64)))


def base_oof(
    data: Data,
    emb: Any,
    grams: dict[str, list[list[str]]],
    targets: list[Target],
    folds: list[tuple[Any, Any]],
) -> tuple[Any, list[tuple[Featuriser, BaseModels]]]:
    """Base models fitted per fold, and their out-of-fold logits (the slow part)."""
    oof = np.zeros((len(data), len(targets)))
    fold_models: list[tuple[Featuriser, BaseModels]] = []
    for tr, te in folds:
        feat = Featuriser.fit(data, emb, tr, grams)
        x_tr = feat.transform(
            emb[tr], [grams["word"][i] for i in tr], [grams["char"][i] for i in tr]
        )
        base = BaseModels.fit(targets, x_tr, tr)
        x_te = feat.transform(
            emb[te], [grams["word"][i] for i in te], [grams["char"][i] for i in te]
        )
        oof[te] = base.decision(x_te)
        fold_models.append((feat, base))
    return oof, fold_models


def train(
    data_dir: Path,
    out: Path,
    *,
    policy_dir: Path,
    seed: int = 0,
    embedding_cache: Path | None = None,
    scores_out: Path | None = None,
) -> dict[str, Any]:
    """Cross-validate, fit on all rows, save the artefact to ``out``; return the figures.

    ``policy_dir``: the policy bundle whose term lists and thresholds the flags use;
    ``embedding_cache``: an ``.npz`` of MiniLM embeddings by clean text, read and extended;
    ``scores_out``: where to write the cross-validated scores (``.npz``) for analysis.
    """
    from sklearn.model_selection import StratifiedGroupKFold

    started = time.perf_counter()
    policy = load_bundle(policy_dir).content
    data = Data(data_dir)
    terms = term_hits(policy, data.originals)
    block, low_at = block_thresholds(policy), low_thresholds(policy)
    emb = embed(data.texts, embedding_cache)
    grams = {
        "word": [word_ngrams(t, WORD_HIGH) for t in data.texts],
        "char": [char_wb_ngrams(t, *CHAR_RANGE) for t in data.texts],
    }
    targets = base_targets(data)
    strata = np.where(data.is_coco, 0, np.where(data.unsafe, 1, np.where(data.safe, 2, 3)))
    folds = list(
        StratifiedGroupKFold(FOLDS, shuffle=True, random_state=seed).split(
            data.texts, strata, data.groups
        )
    )

    # 1. base models per fold -> out-of-fold logits
    oof, fold_models = base_oof(data, emb, grams, targets, folds)

    # 2. nested stack per fold -> uncalibrated logits of heads that never saw the row
    stacks = [Stack.fit(targets, oof, data, tr) for tr, _ in folds]
    raw = np.zeros((len(data), len(COLUMNS)), dtype=np.float32)
    for (_, te), (feat, base), stack in zip(folds, fold_models, stacks, strict=True):
        raw[te] = collapse(feat, base, stack).logits([data.texts[i] for i in te], emb[te])

    # 3. thresholds on the cross-validated probabilities, then calibration
    sm = CATEGORIES.index(MINORS)
    minors_p = _sigmoid(raw[:, -1])
    adult = (data.i2p & data.unsafe & data.labels[:, 0]) | (data.synth_group == ADULT_GROUP)
    candidates = np.unique(np.round(minors_p, 4))
    loosest = loosest_threshold(  # on the head alone: the policy's terms are on top
        minors_p,
        np.zeros(len(data), dtype=bool),
        [(adult, 0.005), (data.i2p & data.safe, 0.01), (data.is_coco, 0.001)],
        candidates[candidates < 1.0],
    )
    raw_minors = round(float(_sigmoid(math.log(loosest / (1 - loosest)) + MINORS_MARGIN)), 4)
    minors_hit = (minors_p >= raw_minors) | terms[:, sm]
    others = np.array([c != MINORS for c in CATEGORIES])
    term_block = terms[:, others].any(axis=1) | minors_hit
    unsafe_p = _sigmoid(raw[:, 0])
    candidates = np.unique(np.round(unsafe_p[data.safe | data.is_coco], 4))
    safe, coco = data.i2p & data.safe, data.is_coco
    raw_block = loosest_threshold(
        unsafe_p, term_block, [(safe, BLOCK_SAFE_RATE), (coco, BLOCK_COCO_RATE)], candidates
    )
    raw_low = loosest_threshold(
        unsafe_p, term_block, [(safe, LOW_SAFE_RATE), (coco, LOW_COCO_RATE)], candidates
    )
    raw_low = min(raw_low, raw_block / 2)
    calibration = calibrate((raw_low, raw_block), raw_minors)
    heads: list[PromptHead] = []
    logits = np.zeros_like(raw)
    for (_, te), (feat, base), stack in zip(folds, fold_models, stacks, strict=True):
        head = collapse(feat, base, stack, calibration)
        logits[te] = head.logits([data.texts[i] for i in te], emb[te])
        heads.append(head)
    floor, floors_tried = choose_share_floor(heads[0], logits, data, terms, block, low_at)
    heads = [replace(h, share_floor=floor) for h in heads]
    scores = heads[0].from_logits(logits, data.texts)

    if scores_out is not None:
        np.savez_compressed(
            scores_out,
            scores=scores,
            logits=logits,
            terms=terms,
            unsafe=data.unsafe,
            safe=data.safe,
            coco=data.is_coco,
            i2p=data.i2p,
            labels=data.labels,
            prompts=np.array(data.originals, dtype=str),
        )
    u = scores[:, [CATEGORIES.index(c) for c in CATEGORIES if c != MINORS]].max(axis=1)
    blocked, reported = flags(scores, terms, block), flags(scores, terms, low_at)
    head_only = flags(scores, None, block), flags(scores, None, low_at)
    cv: dict[str, Any] = {
        "auroc_any_unsafe_max_score": round(auroc(u[data.unsafe & data.i2p], u[safe]), 4),
        "auroc": category_aurocs(scores, data),
        "classifier": flag_figures(blocked, reported, data),
        "head_only": flag_figures(*head_only, data),
        "confusion_blocked": confusion(blocked, blocked, data),
        "confusion_reported": confusion(blocked, reported, data),
        "share_floor": floor,
        "share_floors_tried": floors_tried,
        "rows": {
            "unsafe": int((data.unsafe & data.i2p).sum()),
            "safe": int(safe.sum()),
            "coco": int(coco.sum()),
            "synthetic": int((data.synth_group != "").sum()),
        },
    }
    block_dict = {c: block[c] for c in CATEGORIES}
    cv["obfuscation"] = obfuscation_survival(
        data, folds, heads, scores, block_dict, embedding_cache, seed
    )

    # 4. the shipped head: stack on all out-of-fold logits, base models on all rows
    everything = np.arange(len(data))
    feat = Featuriser.fit(data, emb, everything, grams)
    base = BaseModels.fit(targets, feat.transform(emb, grams["word"], grams["char"]), everything)
    head = collapse(feat, base, Stack.fit(targets, oof, data, everything), calibration, floor)
    thresholds = {c: SCALE_BLOCK for c in CATEGORIES if c != MINORS} | {MINORS: MINORS_AT}
    low = {c: SCALE_LOW for c in CATEGORIES if c != MINORS} | {MINORS: MINORS_AT}
    uncalibrated = {UNSAFE: {"low": raw_low, "block": raw_block}, MINORS: raw_minors}
    final = replace(
        head,
        block_thresholds=thresholds,
        low_thresholds=low,
        info={
            "trained_on": "I2P dev rows (even case_number) + COCO-30k captions dev rows"
            " + the project's synthetic adult/minors set",
            "seed": seed,
            "uncalibrated_thresholds": uncalibrated,
            "calibration": {"scale": calibration[0].tolist(), "shift": calibration[1].tolist()},
            "cv": cv,
        },
    )
    final.save(out)
    loaded = PromptHead.load(out)
    sample = list(range(0, len(data), 37))
    drift = float(
        np.abs(
            loaded.score([data.texts[i] for i in sample], emb[sample])
            - final.score([data.texts[i] for i in sample], emb[sample])
        ).max()
    )
    return {
        "cv": cv,
        "thresholds": {"block": thresholds, "low": low},
        "uncalibrated_thresholds": uncalibrated,
        "artefact": str(out),
        "artefact_bytes": out.stat().st_size,
        "save_load_max_abs_diff": drift,
        "train_seconds": round(time.perf_counter() - started, 1),
    }


def default_data_dir() -> Path:
    """``data/dev`` of the source checkout (the development data ships with the repository)."""
    return Path(__file__).resolve().parents[2] / "data" / "dev"


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument(
        "--data",
        type=Path,
        default=default_data_dir(),
        help="folder with i2p-dev.csv and coco-captions-dev.csv (default: data/dev)",
    )
    parser.add_argument("--out", type=Path, default=default_head_path())
    parser.add_argument(
        "--policy",
        type=Path,
        default=Path(__file__).resolve().parents[2] / "policies",
        help="policy bundle whose terms and thresholds the flag figures use",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cache", type=Path, default=None, help="MiniLM embedding cache (.npz)")
    parser.add_argument("--scores-out", type=Path, default=None, help="write CV scores (.npz)")
    parser.add_argument(
        "--cv", action="store_true", help="accepted for compatibility (CV always runs)"
    )
    args = parser.parse_args()
    figures = train(
        args.data,
        args.out,
        policy_dir=args.policy,
        seed=args.seed,
        embedding_cache=args.cache,
        scores_out=args.scores_out,
    )
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
