"""Rebuild the prompt head from the development data (and report cross-validated figures).

    python -m gateway.safety.train_prompt_head --data ../shared/data \
        --out gateway/safety/artefacts/prompt_head.npz [--cv]

Deterministic for a given data set and library versions. Positives for a category: I2P
prompts labelled with it whose images were judged inappropriate at least 30 % of the time;
negatives: style-matched safe I2P prompts (<= 10 %) and COCO captions. Every text is
normalised exactly as the gateway does before any feature is computed.
"""

from __future__ import annotations

import argparse
import csv
import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from gateway.domain import CATEGORIES
from gateway.safety.normalize import normalise
from gateway.safety.prompt_head import PromptHead, Tfidf, default_head_path
from gateway.safety.text_encoder import MiniLMEncoder

TRAINED = ("sexual", "violence", "self-harm", "hate", "harassment", "illicit", "shocking")
I2P_NAMES = {"illegal activity": "illicit"}
POSITIVE_PCT = 30.0
UNSAFE_PCT, SAFE_PCT = 60.0, 10.0


class Data:
    def __init__(self, folder: Path) -> None:
        with (folder / "i2p-dev.csv").open(newline="", encoding="utf-8") as fh:
            i2p = list(csv.DictReader(fh))
        with (folder / "coco-captions-dev.csv").open(newline="", encoding="utf-8") as fh:
            coco = list(csv.DictReader(fh))
        self.texts = [normalise(r["prompt"]).clean for r in i2p + coco]
        self.pct = np.array([float(r["inappropriate_percentage"]) for r in i2p] + [0.0] * len(coco))
        self.is_coco = np.array([False] * len(i2p) + [True] * len(coco))
        self.labels = np.zeros((len(self.texts), len(TRAINED)), dtype=bool)
        for i, row in enumerate(i2p):
            for name in row["categories"].split(","):
                name = I2P_NAMES.get(name.strip(), name.strip())
                if name in TRAINED:
                    self.labels[i, TRAINED.index(name)] = True
        keys = [re.sub(r"[^a-z0-9]+", " ", t).strip() for t in self.texts]
        index: dict[str, int] = {}
        self.groups = np.array([index.setdefault(k, len(index)) for k in keys])


def fit(texts: list[str], emb: npt.NDArray[np.float32], data: Data, rows: Any) -> PromptHead:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    sub = [texts[i] for i in rows]
    words = TfidfVectorizer(sublinear_tf=True, ngram_range=(1, 2), min_df=2, max_features=30000)
    chars = TfidfVectorizer(
        sublinear_tf=True, analyzer="char_wb", ngram_range=(2, 5), min_df=3, max_features=40000
    )
    from scipy.sparse import hstack

    x_text = hstack([words.fit_transform(sub), chars.fit_transform(sub)]).tocsr()
    w_e, b_e, w_t, b_t = [], [], [], []
    for k in range(len(TRAINED)):
        y = data.labels[rows, k] & (data.pct[rows] >= POSITIVE_PCT)
        keep = y | (data.pct[rows] <= SAFE_PCT) | data.is_coco[rows]
        e = LogisticRegression(C=2.0, max_iter=3000, class_weight="balanced")
        e.fit(emb[rows][keep], y[keep])
        t = LogisticRegression(C=4.0, max_iter=3000, class_weight="balanced")
        t.fit(x_text[keep], y[keep])
        w_e.append(e.coef_[0])
        b_e.append(e.intercept_[0])
        w_t.append(t.coef_[0])
        b_t.append(t.intercept_[0])
    f32 = np.float32
    return PromptHead(
        categories=TRAINED,
        words=Tfidf({str(k): int(v) for k, v in words.vocabulary_.items()}, words.idf_.astype(f32)),
        chars=Tfidf({str(k): int(v) for k, v in chars.vocabulary_.items()}, chars.idf_.astype(f32)),
        emb_weights=np.array(w_e, dtype=f32),
        emb_bias=np.array(b_e, dtype=f32),
        text_weights=np.array(w_t, dtype=f32),
        text_bias=np.array(b_t, dtype=f32),
    )


def cross_validate(data: Data, emb: npt.NDArray[np.float32], seed: int) -> dict[str, Any]:
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedGroupKFold

    strata = np.where(
        data.is_coco, 0, np.where(data.pct >= UNSAFE_PCT, 1, np.where(data.pct <= SAFE_PCT, 2, 3))
    )
    scores = np.zeros((len(data.texts), len(CATEGORIES)), dtype=np.float32)
    for train, test in StratifiedGroupKFold(5, shuffle=True, random_state=seed).split(
        data.texts, strata, data.groups
    ):
        head = fit(data.texts, emb, data, train)
        scores[test] = head.score([data.texts[i] for i in test], emb[test])
    unsafe = ~data.is_coco & (data.pct >= UNSAFE_PCT)
    safe = ~data.is_coco & (data.pct <= SAFE_PCT)
    top = scores.max(axis=1)

    def auc(pos: npt.NDArray[np.bool_], values: npt.NDArray[np.float32]) -> float:
        y = np.r_[np.ones(pos.sum()), np.zeros(safe.sum())]
        return round(float(roc_auc_score(y, np.r_[values[pos], values[safe]])), 3)

    out: dict[str, Any] = {"auroc_any_unsafe_max_score": auc(unsafe, top)}
    for k, cat in enumerate(TRAINED):
        out[f"auroc_{cat}"] = auc(unsafe & data.labels[:, k], scores[:, CATEGORIES.index(cat)])
    out["cv_scores"] = scores
    out["unsafe"], out["safe"], out["coco"] = unsafe, safe, data.is_coco
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--out", type=Path, default=default_head_path())
    parser.add_argument("--cv", action="store_true", help="also print 5-fold CV figures")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    data = Data(args.data)
    emb = MiniLMEncoder(cache_size=0).encode(data.texts)
    head = fit(data.texts, emb, data, np.arange(len(data.texts)))
    head.save(args.out)
    check = PromptHead.load(args.out).score(data.texts[:200], emb[:200])
    print(
        json.dumps(
            {
                "artefact": str(args.out),
                "bytes": args.out.stat().st_size,
                "trained_categories": list(TRAINED),
                "rows": len(data.texts),
                "sample_max_score": float(check.max()),
            }
        )
    )
    if args.cv:
        figures = cross_validate(data, emb, args.seed)
        for key in ("cv_scores", "unsafe", "safe", "coco"):
            figures.pop(key)
        print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
