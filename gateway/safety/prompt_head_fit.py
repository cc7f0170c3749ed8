"""Fitting the prompt head: data loading, features, base regressions, stack, collapse.

Used by ``train_prompt_head`` (the command); see its docstring for the model.
"""

from __future__ import annotations

import csv
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from gateway.safety.normalize import normalise
from gateway.safety.prompt_head import UNSAFE, PromptHead, Tfidf, rbf_kernel

# the I2P categories, scored conditionally on "unsafe"; sexual/minors is scored on its own
CONDITIONAL = ("sexual", "violence", "self-harm", "hate", "harassment", "illicit", "shocking")
MINORS = "sexual/minors"
TRAINED = (*CONDITIONAL, MINORS)  # the label columns, and the head's categories
COLUMNS = (UNSAFE, *CONDITIONAL, MINORS)  # the head's logit columns
I2P_NAMES = {"illegal activity": "illicit"}
UNSAFE_PCT, SAFE_PCT = 60.0, 10.0
COND_PCT = 30.0  # I2P rows at or above this share train the conditional category models
SYNTHETIC = "synthetic-adult-minors.csv"

WORD_HIGH, WORD_MIN_DF = 1, 2
CHAR_RANGE, CHAR_MIN_DF = (3, 6), 2
GAMMA = 2.0
EIGEN_FLOOR = 1e-6  # kernel eigenvalues below this share of the largest are dropped
FAMILIES = ("emb", "kernel", "word", "char")
BASE_C = {"emb": 3.0, "kernel": 10.0, "word": 3.0, "char": 10.0}
COCO_FAMILIES = ("emb", "kernel")
META_C, UNSAFE_C, COND_C = 1.0, 0.03, 1.0
MINORS_ADULT_WEIGHT = 5.0  # adult sexual rows' weight in the sexual/minors stack
# COCO's weight in the unsafe stack: more makes everyday captions safer and I2P ranking worse
UNSAFE_COCO_WEIGHT = 0.03
FOLDS = 5
# flag-rate targets the thresholds are chosen for (issue 3 asks <= 25 % / <= 2 %)
BLOCK_SAFE_RATE, BLOCK_COCO_RATE = 0.15, 0.005
LOW_SAFE_RATE, LOW_COCO_RATE = 0.35, 0.03
# the shipped scores are calibrated so that these are every category's low / block thresholds
# (the content policy's prompt ``low`` and ``high``)
SCALE_LOW, SCALE_BLOCK = 0.50, 0.92
# the content policy's sexual/minors prompt ``low`` threshold, where it blocks
MINORS_AT = 0.45
# logits above the loosest threshold that keeps adult sexual prompts clear: a margin for
# adult prompts unlike the development rows
MINORS_MARGIN = 1.0

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]
Mask = npt.NDArray[np.bool_]
Calibration = tuple[F64, F64]  # per-column (scale, shift) applied to the stacked logit


# ---------------------------------------------------------------------------- data


class Data:
    """I2P and COCO development rows plus the project's synthetic set (``SYNTHETIC``).

    ``unsafe`` / ``safe`` cover every source (training); ``i2p`` marks the rows the headline
    figures are computed on, so they stay comparable with earlier heads.
    """

    def __init__(self, folder: Path) -> None:
        with (folder / "i2p-dev.csv").open(newline="", encoding="utf-8") as fh:
            i2p = list(csv.DictReader(fh))
        with (folder / "coco-captions-dev.csv").open(newline="", encoding="utf-8") as fh:
            coco = list(csv.DictReader(fh))
        synth: list[dict[str, str]] = []
        if (folder / SYNTHETIC).is_file():
            with (folder / SYNTHETIC).open(newline="", encoding="utf-8") as fh:
                synth = list(csv.DictReader(fh))
        labelled = i2p + synth
        self.originals = [r["prompt"] for r in labelled + coco]
        self.texts = [normalise(t).clean for t in self.originals]
        self.pct = np.array(
            [float(r["inappropriate_percentage"]) for r in labelled] + [0.0] * len(coco)
        )
        self.is_coco = np.array([False] * len(labelled) + [True] * len(coco))
        self.i2p = np.array([True] * len(i2p) + [False] * (len(synth) + len(coco)))
        self.synth_group = np.array(
            [""] * len(i2p) + [r["group"] for r in synth] + [""] * len(coco), dtype=object
        )
        self.labels = np.zeros((len(self.texts), len(TRAINED)), dtype=bool)
        for i, row in enumerate(labelled):
            for name in row["categories"].split(","):
                name = I2P_NAMES.get(name.strip(), name.strip())
                if name in TRAINED:
                    self.labels[i, TRAINED.index(name)] = True
        keys = [re.sub(r"[^a-z0-9]+", " ", t).strip() for t in self.texts]
        index: dict[str, int] = {}
        self.groups = np.array([index.setdefault(k, len(index)) for k in keys])
        self.unsafe = ~self.is_coco & (self.pct >= UNSAFE_PCT)
        self.safe = ~self.is_coco & (self.pct <= SAFE_PCT)
        # rows that train the conditional models: unsafe-ish prompts with an I2P category
        cond = self.labels[:, : len(CONDITIONAL)].any(axis=1)
        self.cond_rows = ~self.is_coco & (self.pct >= COND_PCT) & cond

    def __len__(self) -> int:
        return len(self.texts)


def embed(texts: Sequence[str], cache: Path | None) -> F32:
    """MiniLM embeddings of ``texts``, reusing (and extending) an ``.npz`` cache."""
    known: dict[str, F32] = {}
    if cache is not None and cache.is_file():
        with np.load(cache, allow_pickle=False) as z:
            known = {str(t): e for t, e in zip(z["texts"], z["emb"], strict=True)}
    missing = sorted(set(texts) - known.keys())
    if missing:
        from gateway.safety.text_encoder import MiniLMEncoder

        fresh = MiniLMEncoder(cache_size=0, backend="torch").encode(missing)
        known.update(zip(missing, fresh, strict=True))
        if cache is not None:
            keys = sorted(known)
            np.savez(cache, texts=np.array(keys, dtype=str), emb=np.stack([known[k] for k in keys]))
    return np.stack([known[t] for t in texts]).astype(np.float32)


# ---------------------------------------------------------------------------- features


def fit_tfidf(docs: Sequence[Sequence[str]], min_df: int) -> Tfidf:
    df: dict[str, int] = {}
    for grams in docs:
        for g in set(grams):
            df[g] = df.get(g, 0) + 1
    terms = sorted(g for g, n in df.items() if n >= min_df)
    n = len(docs)
    idf = np.array([math.log((1 + n) / (1 + df[t])) + 1.0 for t in terms], dtype=np.float64)
    return Tfidf({t: i for i, t in enumerate(terms)}, idf.astype(np.float32))


def tfidf_matrix(tfidf: Tfidf, docs: Sequence[Sequence[str]]) -> Any:
    from scipy.sparse import csr_matrix

    indptr: list[int] = [0]
    indices: list[int] = []
    values: list[float] = []
    for grams in docs:
        row = tfidf.transform(list(grams))
        indices.extend(row.keys())
        values.extend(row.values())
        indptr.append(len(indices))
    return csr_matrix(
        (np.array(values, dtype=np.float64), np.array(indices, dtype=np.int64), indptr),
        shape=(len(docs), len(tfidf.vocabulary)),
    )


@dataclass
class Featuriser:
    words: Tfidf
    chars: Tfidf
    landmarks: F32
    kernel_map: F64  # [L, r]: kernel features = K(x, landmarks) @ kernel_map

    @classmethod
    def fit(
        cls, data: Data, emb: F32, rows: npt.NDArray[np.int64], grams: dict[str, list[list[str]]]
    ) -> Featuriser:
        words = fit_tfidf([grams["word"][i] for i in rows], WORD_MIN_DF)
        chars = fit_tfidf([grams["char"][i] for i in rows], CHAR_MIN_DF)
        # landmarks: the distinct I2P training prompts, stored (and used) at float16 precision
        seen: dict[str, int] = {}
        for i in rows:
            if not data.is_coco[i]:
                seen.setdefault(data.texts[i], int(i))
        idx = [seen[t] for t in sorted(seen)]
        landmarks = emb[idx].astype(np.float16).astype(np.float32)
        k = rbf_kernel(landmarks, landmarks, GAMMA).astype(np.float64)
        vals, vecs = np.linalg.eigh((k + k.T) / 2)
        keep = vals > EIGEN_FLOOR * vals.max()
        kernel_map = vecs[:, keep] / np.sqrt(vals[keep])
        return cls(words, chars, landmarks, kernel_map)

    def transform(
        self, emb: F32, word_docs: Sequence[Sequence[str]], char_docs: Sequence[Sequence[str]]
    ) -> dict[str, Any]:
        return {
            "emb": emb.astype(np.float64),
            "kernel": rbf_kernel(emb, self.landmarks, GAMMA).astype(np.float64) @ self.kernel_map,
            "word": tfidf_matrix(self.words, word_docs),
            "char": tfidf_matrix(self.chars, char_docs),
        }


# ---------------------------------------------------------------------------- models


@dataclass(frozen=True)
class Target:
    name: str
    family: str
    y: F64  # soft target in [0, 1]
    rows: Mask


def base_targets(data: Data) -> list[Target]:
    """Per family: ``generic`` (every labelled row, soft target), ``<cat>`` (that category's
    rows against safe ones, soft; ``+coco`` adds COCO as negatives), ``cond:<cat>`` (unsafe
    rows only, one-vs-rest) and ``sexual/minors`` (against every other row)."""
    labelled = ~data.is_coco
    soft = data.pct / 100.0
    out: list[Target] = []
    for fam in FAMILIES:
        out.append(Target("generic", fam, np.where(labelled, soft, 0.0), labelled))
        for k, cat in enumerate(CONDITIONAL):
            y = np.where(data.labels[:, k], soft, 0.0)
            rows = data.labels[:, k] | (data.pct <= SAFE_PCT)
            out.append(Target(cat, fam, y, rows & labelled))
            if fam in COCO_FAMILIES:
                out.append(Target(cat + "+coco", fam, y, rows))
            out.append(Target("cond:" + cat, fam, data.labels[:, k].astype(float), data.cond_rows))
        minors = data.labels[:, TRAINED.index(MINORS)].astype(float)
        out.append(Target(MINORS, fam, minors, np.ones(len(data), dtype=bool)))
    return out


def fit_logistic(x: Any, y: F64, weight: F64 | None = None, c: float = 1.0) -> tuple[F64, float]:
    """L2 logistic regression with soft targets (fractional rows enter twice, weighted)."""
    from scipy.sparse import issparse, vstack
    from sklearn.linear_model import LogisticRegression

    w = np.ones(len(y)) if weight is None else weight
    frac = (y > 0) & (y < 1)
    hard = ~frac
    parts = [x[hard], x[frac], x[frac]]
    xx = vstack(parts).tocsr() if issparse(x) else np.vstack(parts)
    yy = np.r_[y[hard] >= 0.5, np.ones(frac.sum(), bool), np.zeros(frac.sum(), bool)]
    ww = np.r_[w[hard], w[frac] * y[frac], w[frac] * (1 - y[frac])]
    # liblinear is several times faster on the wide sparse TF-IDF matrices
    solver = "liblinear" if issparse(x) else "lbfgs"
    clf = LogisticRegression(C=c, solver=solver, max_iter=5000, tol=1e-4)
    clf.fit(xx, yy, sample_weight=ww)
    return clf.coef_[0].astype(np.float64), float(clf.intercept_[0])


@dataclass
class BaseModels:
    """Fitted base regressions: ``coef[j]`` over family ``targets[j].family``'s features."""

    targets: list[Target]
    coef: list[F64]
    intercept: F64

    @classmethod
    def fit(
        cls, targets: list[Target], feats: dict[str, Any], rows: npt.NDArray[np.int64]
    ) -> BaseModels:
        coef, intercept = [], []
        for t in targets:
            r = rows[t.rows[rows]]
            pos = np.searchsorted(rows, r)
            w, b = fit_logistic(feats[t.family][pos], t.y[r], c=BASE_C[t.family])
            coef.append(w)
            intercept.append(b)
        return cls(targets, coef, np.array(intercept))

    def decision(self, feats: dict[str, Any]) -> F64:
        cols = [
            feats[t.family] @ w + b
            for t, w, b in zip(self.targets, self.coef, self.intercept, strict=True)
        ]
        return np.column_stack([np.asarray(c).ravel() for c in cols])


def _inputs(targets: list[Target], names: set[str]) -> list[int]:
    return [j for j, t in enumerate(targets) if t.name in names]


@dataclass
class Stack:
    """Per output column, stacking weights over base logits: ``z = Z @ weights.T + bias``."""

    weights: F64  # [len(COLUMNS), n_base]
    bias: F64  # [len(COLUMNS)]

    @classmethod
    def fit(cls, targets: list[Target], z: F64, data: Data, rows: npt.NDArray[np.int64]) -> Stack:
        weights = np.zeros((len(COLUMNS), z.shape[1]))
        bias = np.zeros(len(COLUMNS))
        # unsafe: every generic and per-category logit; unsafe vs safe, COCO down-weighted
        cols = _inputs(targets, {"generic", *CONDITIONAL, *(c + "+coco" for c in CONDITIONAL)})
        sel = rows[data.unsafe[rows] | data.safe[rows] | data.is_coco[rows]]
        w = np.where(data.is_coco[sel], UNSAFE_COCO_WEIGHT, 1.0)
        weights[0, cols], bias[0] = fit_logistic(
            z[sel][:, cols], data.unsafe[sel].astype(float), w, c=UNSAFE_C
        )
        # conditional: that category's conditional logits, on unsafe rows only
        sel = rows[data.cond_rows[rows]]
        for k, cat in enumerate(CONDITIONAL):
            cols = _inputs(targets, {"cond:" + cat})
            y = data.labels[sel, k].astype(float)
            weights[1 + k, cols], bias[1 + k] = fit_logistic(z[sel][:, cols], y, c=COND_C)
        # sexual/minors: its logits and the sexual ones, against every other row, adult
        # sexual rows weighted up (what separates them from minors is what matters)
        cols = _inputs(targets, {MINORS, "sexual", "sexual+coco", "cond:sexual"})
        minors = data.labels[rows, TRAINED.index(MINORS)]
        adult = data.labels[rows, TRAINED.index("sexual")] & ~minors
        w = np.where(adult, MINORS_ADULT_WEIGHT, 1.0)
        weights[-1, cols], bias[-1] = fit_logistic(
            z[rows][:, cols], minors.astype(float), w, c=META_C
        )
        return cls(weights, bias)


def collapse(
    feat: Featuriser,
    base: BaseModels,
    stack: Stack,
    calibration: Calibration | None = None,
    share_floor: float = 0.9,
) -> PromptHead:
    """Fold base regressions, stack and calibration into one weight matrix per family."""
    k = len(COLUMNS)
    scale, shift = (np.ones(k), np.zeros(k)) if calibration is None else calibration
    mats: dict[str, F64] = {}
    for fam in FAMILIES:
        cols = [j for j, t in enumerate(base.targets) if t.family == fam]
        w = np.column_stack([base.coef[j] for j in cols])  # [F, n_fam]
        mats[fam] = (w @ stack.weights[:, cols].T) * scale  # [F, K]
    bias = (stack.bias + stack.weights @ base.intercept) * scale + shift
    f16 = np.float16
    return PromptHead(
        categories=TRAINED,
        columns=COLUMNS,
        conditional=CONDITIONAL,
        share_floor=share_floor,
        words=feat.words,
        chars=feat.chars,
        word_high=WORD_HIGH,
        char_range=CHAR_RANGE,
        gamma=GAMMA,
        landmarks=feat.landmarks,
        # stored at the precision the artefact keeps, so CV scores what ships
        word_weights=mats["word"].astype(f16).astype(np.float32).reshape(-1, k),
        char_weights=mats["char"].astype(f16).astype(np.float32).reshape(-1, k),
        emb_weights=mats["emb"].astype(np.float32),
        kernel_weights=(feat.kernel_map @ mats["kernel"]).astype(np.float32),
        bias=bias.astype(np.float32),
    )


def _logit(p: float) -> float:
    return math.log(p / (1.0 - p))


def calibrate(unsafe: tuple[float, float], minors: float) -> Calibration:
    """Affine maps of the stacked logits: the unsafe column's chosen (low, block) thresholds
    go to ``SCALE_LOW`` / ``SCALE_BLOCK``; the minors column's threshold to ``MINORS_AT``;
    the conditional columns stay as they are (only their ratios matter)."""
    low, block = unsafe
    scale, shift = np.ones(len(COLUMNS)), np.zeros(len(COLUMNS))
    scale[0] = (_logit(SCALE_BLOCK) - _logit(SCALE_LOW)) / (_logit(block) - _logit(low))
    shift[0] = _logit(SCALE_BLOCK) - scale[0] * _logit(block)
    shift[-1] = _logit(MINORS_AT) - _logit(minors)
    return scale, shift
