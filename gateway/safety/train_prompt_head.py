"""Rebuild the prompt head from the development data and report cross-validated figures.

    python -m gateway.safety.train_prompt_head [--data data/dev] \
        --out gateway/safety/artefacts/prompt_head.npz [--cache /tmp/emb_cache.npz]

Deterministic for a given data set, seed and library versions (a few minutes on 2 cores).
Every text is normalised exactly as the gateway does (``normalise(text).clean``) before any
feature is computed.

Model (see ``prompt_head.py`` for inference):
1. base logistic regressions on four feature families (MiniLM embedding, RBF kernel to the
   training prompts' embeddings, TF-IDF word unigrams, TF-IDF within-word character 3-6
   grams), with soft targets (the share of inappropriate images, ``pct / 100``):
   - per category: I2P rows labelled with it (target ``pct / 100``) against style-matched
     safe I2P rows (<= 10 %); the embedding and kernel families also get a variant that
     adds COCO captions as negatives;
   - generic "unsafe": every I2P row, target ``pct / 100``;
2. per category, a stacking logistic regression on the base models' out-of-fold logits,
   trained to separate that category's unsafe prompts (>= 60 %) from style-matched safe
   prompts and COCO captions (weighted 0.3);
3. a generic stack (unsafe >= 60 % vs safe <= 10 %) whose logit is added, times 0.75, to
   every category but ``sexual`` (so the maximum over categories ranks "any unsafe" well).
4. per-category calibration: thresholds are chosen on the cross-validated stacked
   probability (block: union of flags <= 15 % of style-matched safe and <= 0.5 % of COCO;
   low: <= 35 % / <= 3 %), then each category's logit is mapped affinely so that its low
   threshold becomes 0.50 and its block threshold 0.92 (the content policy's prompt ``low``
   and ``high``). The map is monotone per category: per-category AUROC is unchanged.
All stages are linear in the features, so they collapse into one weight matrix per family.

Cross-validation: 5 folds stratified by outcome and grouped by normalised text; the stack is
nested (fold k's stack is fitted on the other folds' out-of-fold logits), so every reported
figure comes from a head that never saw the row. Thresholds are chosen on those scores.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from gateway.domain import CATEGORIES
from gateway.safety.prompt_head import PromptHead, char_wb_ngrams, default_head_path, word_ngrams
from gateway.safety.prompt_head_eval import (
    auroc,
    choose_thresholds,
    flag,
    obfuscation_survival,
    rates,
)
from gateway.safety.prompt_head_fit import (
    BLOCK_COCO_RATE,
    BLOCK_SAFE_RATE,
    CHAR_RANGE,
    FOLDS,
    LOW_COCO_RATE,
    LOW_SAFE_RATE,
    SCALE_BLOCK,
    SCALE_LOW,
    TRAINED,
    WORD_HIGH,
    BaseModels,
    Data,
    Featuriser,
    Stack,
    base_targets,
    calibrate,
    collapse,
    embed,
)


def train(
    data_dir: Path,
    out: Path,
    *,
    seed: int = 0,
    embedding_cache: Path | None = None,
    scores_out: Path | None = None,
) -> dict[str, Any]:
    """Cross-validate, fit on all rows, save the artefact to ``out``; return the figures.

    ``embedding_cache``: an ``.npz`` of MiniLM embeddings by clean text, read and extended;
    ``scores_out``: where to write the cross-validated scores (``.npz``) for analysis.
    """
    from sklearn.model_selection import StratifiedGroupKFold

    started = time.perf_counter()
    data = Data(data_dir)
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

    # 2. nested stack per fold -> a complete head per fold, scored through the numpy path;
    # thresholds are chosen on the stacked probability, then every category is calibrated so
    # that they sit at SCALE_LOW / SCALE_BLOCK, and the fold heads are rebuilt calibrated
    stacks = [Stack.fit(targets, oof, data, tr) for tr, _ in folds]
    raw = np.zeros((len(data), len(CATEGORIES)), dtype=np.float32)
    for (_, te), (feat, base), stack in zip(folds, fold_models, stacks, strict=True):
        raw[te] = collapse(feat, base, stack).score([data.texts[i] for i in te], emb[te])
    raw_block = choose_thresholds(raw, data, BLOCK_SAFE_RATE, BLOCK_COCO_RATE)
    raw_low = choose_thresholds(raw, data, LOW_SAFE_RATE, LOW_COCO_RATE)
    raw_low = {c: min(raw_low[c], raw_block[c] / 2) for c in TRAINED}
    calibration = calibrate(raw_low, raw_block)
    block = {c: SCALE_BLOCK for c in TRAINED}
    low = {c: SCALE_LOW for c in TRAINED}
    scores = np.zeros((len(data), len(CATEGORIES)), dtype=np.float32)
    heads: list[PromptHead] = []
    for (_, te), (feat, base), stack in zip(folds, fold_models, stacks, strict=True):
        head = collapse(feat, base, stack, calibration)
        scores[te] = head.score([data.texts[i] for i in te], emb[te])
        heads.append(head)

    if scores_out is not None:
        np.savez_compressed(
            scores_out,
            scores=scores,
            unsafe=data.unsafe,
            safe=data.safe,
            coco=data.is_coco,
            labels=data.labels,
            prompts=np.array(data.originals, dtype=str),
        )
    cols = [CATEGORIES.index(c) for c in TRAINED]
    cv: dict[str, Any] = {
        "auroc_any_unsafe_max_score": round(
            auroc(scores[data.unsafe][:, cols].max(1), scores[data.safe][:, cols].max(1)), 4
        ),
        "auroc": {
            c: round(auroc(scores[data.unsafe & data.labels[:, k], j], scores[data.safe, j]), 4)
            for k, (c, j) in enumerate(zip(TRAINED, cols, strict=True))
        },
        "flagged_at_block": rates(flag(scores, block), data),
        "flagged_at_low": rates(flag(scores, low), data),
        "rows": {
            "unsafe": int(data.unsafe.sum()),
            "safe": int(data.safe.sum()),
            "coco": int(data.is_coco.sum()),
        },
    }
    cv["obfuscation"] = obfuscation_survival(
        data, folds, heads, scores, block, embedding_cache, seed
    )

    # 3. the shipped head: stack on all out-of-fold logits, base models on all rows
    everything = np.arange(len(data))
    feat = Featuriser.fit(data, emb, everything, grams)
    base = BaseModels.fit(targets, feat.transform(emb, grams["word"], grams["char"]), everything)
    head = collapse(feat, base, Stack.fit(targets, oof, data, everything), calibration)
    final = replace(
        head,
        block_thresholds=block,
        low_thresholds=low,
        info={
            "trained_on": "I2P dev rows (even case_number) + COCO-30k captions dev rows",
            "seed": seed,
            "uncalibrated_thresholds": {"block": raw_block, "low": raw_low},
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
        "thresholds": {"block": block, "low": low},
        "uncalibrated_thresholds": {"block": raw_block, "low": raw_low},
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
        seed=args.seed,
        embedding_cache=args.cache,
        scores_out=args.scores_out,
    )
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
