"""The trained prompt head: per-category scores from MiniLM embeddings and TF-IDF.

Four feature families are computed from the normalised (``clean``) text and its
mean-pooled all-MiniLM-L6-v2 embedding:

- the embedding itself;
- an RBF kernel between the embedding and the training prompts' embeddings (landmarks);
- TF-IDF word n-grams and TF-IDF within-word character n-grams (scikit-learn's
  ``sublinear_tf`` + smoothed idf + L2 norm, reproduced exactly here).

Every output column is linear in those features (``train_prompt_head.py`` collapses its
base regressions, stacks and calibration into one weight matrix per family). The columns:

- ``unsafe``: a calibrated "any unsafe" logit (the block decision);
- one *conditional* logit per I2P category: how much this prompt looks like that category
  *given that it is unsafe* (one-vs-rest, trained on unsafe prompts only);
- ``sexual/minors``: an absolute logit (sexualised minors against everything else,
  adult sexual prompts included).

Category scores: ``u = sigmoid(unsafe)``, ``q = sigmoid(conditional)``, and for each I2P
category its share ``s_c = q_c / max q``. A category whose share reaches ``share_floor`` is
*evidenced* and scores ``u * s_c`` (the most likely category always carries the unsafe
score, so ``u`` decides blocking); any other scores ``UNEVIDENCED_CAP * u * q_c``, below
every ``low`` threshold of the shipped policy (0.50), so it is never reported, while its
order still follows the evidence. ``sexual/minors`` is its own sigmoid. The proposed
thresholds are stored in the artefact. Inference is plain numpy over arrays stored in one
``.npz`` (no pickled objects).
"""

from __future__ import annotations

import io
import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from gateway.domain import CATEGORIES

FORMAT = "gateway-prompt-head/3"
UNSAFE = "unsafe"
UNEVIDENCED_CAP = 0.49  # the most a category without its own evidence can score
_TOKEN = re.compile(r"(?u)\b\w\w+\b")
_SPACES = re.compile(r"\s\s+")
Array = npt.NDArray[np.float32]


def word_ngrams(text: str, high: int = 2) -> list[str]:
    """scikit-learn's ``word`` analyser (lower-cased ``\\b\\w\\w+\\b`` tokens), n = 1..high."""
    tokens: list[str] = _TOKEN.findall(text.lower())
    out = list(tokens)
    for n in range(2, min(high, len(tokens)) + 1):
        out.extend(" ".join(tokens[i : i + n]) for i in range(len(tokens) - n + 1))
    return out


def char_wb_ngrams(text: str, low: int = 2, high: int = 5) -> list[str]:
    """scikit-learn's ``char_wb`` analyser: n-grams inside space-padded words."""
    out: list[str] = []
    for word in _SPACES.sub(" ", text.lower()).split():
        w = f" {word} "
        for n in range(low, high + 1):
            offset = 0
            out.append(w[offset : offset + n])
            while offset + n < len(w):
                offset += 1
                out.append(w[offset : offset + n])
            if offset == 0:
                break
    return out


@dataclass(frozen=True)
class Tfidf:
    """A fitted TF-IDF vocabulary: ``1 + ln(count)`` times idf, L2-normalised per text."""

    vocabulary: dict[str, int]
    idf: Array

    def transform(self, grams: list[str]) -> dict[int, float]:
        counts: dict[int, int] = {}
        for g in grams:
            j = self.vocabulary.get(g)
            if j is not None:
                counts[j] = counts.get(j, 0) + 1
        row = {j: (1.0 + math.log(c)) * float(self.idf[j]) for j, c in counts.items()}
        norm = math.sqrt(sum(v * v for v in row.values()))
        return {j: v / norm for j, v in row.items()} if norm else {}

    def terms(self) -> list[str]:
        return sorted(self.vocabulary, key=self.vocabulary.__getitem__)


def rbf_kernel(embeddings: Array, landmarks: Array, gamma: float) -> Array:
    """``exp(-gamma * |x - l|^2)`` between every embedding and every landmark."""
    x = np.asarray(embeddings, dtype=np.float32)
    sq = (
        np.sum(x * x, axis=1)[:, None]
        + np.sum(landmarks * landmarks, axis=1)[None, :]
        - 2.0 * (x @ landmarks.T)
    )
    out: Array = np.exp(-gamma * np.maximum(sq, 0.0)).astype(np.float32)
    return out


def _sigmoid(z: Array) -> Array:
    out: Array = (0.5 * (1.0 + np.tanh(0.5 * z))).astype(np.float32)
    return out


@dataclass(frozen=True)
class PromptHead:
    """Linear logits over four feature families; ``score`` gives [N, len(CATEGORIES)]."""

    categories: tuple[str, ...]  # the categories it scores
    columns: tuple[str, ...]  # the logit columns: UNSAFE, conditional categories, absolute ones
    conditional: tuple[str, ...]  # categories scored from ``u`` and their share (see above)
    share_floor: float
    words: Tfidf
    chars: Tfidf
    word_high: int
    char_range: tuple[int, int]
    gamma: float
    landmarks: Array  # [L, dim]
    word_weights: Array  # [len(words), K]
    char_weights: Array  # [len(chars), K]
    emb_weights: Array  # [dim, K]
    kernel_weights: Array  # [L, K]
    bias: Array  # [K]
    # proposed default thresholds on the probability, per trained category
    block_thresholds: dict[str, float] = field(default_factory=dict)
    low_thresholds: dict[str, float] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)

    def logits(self, clean_texts: Sequence[str], embeddings: Array) -> Array:
        """[N, len(columns)] logits."""
        n = len(clean_texts)
        if n == 0:
            return np.zeros((0, len(self.columns)), dtype=np.float32)
        emb = np.asarray(embeddings, dtype=np.float32).reshape(n, -1)
        out = emb @ self.emb_weights + self.bias
        out += rbf_kernel(emb, self.landmarks, self.gamma) @ self.kernel_weights
        low, high = self.char_range
        for i, text in enumerate(clean_texts):
            for tfidf, weights, grams in (
                (self.words, self.word_weights, word_ngrams(text, self.word_high)),
                (self.chars, self.char_weights, char_wb_ngrams(text, low, high)),
            ):
                row = tfidf.transform(grams)
                if row:
                    idx = np.fromiter(row.keys(), dtype=np.int64, count=len(row))
                    val = np.fromiter(row.values(), dtype=np.float32, count=len(row))
                    out[i] += val @ weights[idx]
        return out.astype(np.float32)

    def score(self, clean_texts: Sequence[str], embeddings: Array) -> Array:
        """[N, len(CATEGORIES)] scores in [0, 1], ``CATEGORIES`` order (0 for unscored ones).

        ``clean_texts`` are ``normalise(text).clean``; ``embeddings`` their MiniLM vectors.
        """
        return self.from_logits(self.logits(clean_texts, embeddings), clean_texts)

    def from_logits(self, z: Array, clean_texts: Sequence[str]) -> Array:
        """Category scores from ``logits`` output (see the module docstring)."""
        probs = _sigmoid(z)
        # an empty prompt says nothing (its embedding would still score like a vague prompt)
        probs[[not t.strip() for t in clean_texts]] = 0.0
        out = np.zeros((len(clean_texts), len(CATEGORIES)), dtype=np.float32)
        if len(clean_texts) == 0:
            return out
        unsafe = probs[:, self.columns.index(UNSAFE)]
        cond = probs[:, [self.columns.index(c) for c in self.conditional]]
        share = cond / np.maximum(cond.max(axis=1, keepdims=True), 1e-12)
        evidenced = unsafe[:, None] * share
        other = UNEVIDENCED_CAP * unsafe[:, None] * cond
        mixed = np.where(share >= self.share_floor, evidenced, other)
        for k, cat in enumerate(self.conditional):
            out[:, CATEGORIES.index(cat)] = mixed[:, k]
        for cat in self.categories:
            if cat not in self.conditional:
                out[:, CATEGORIES.index(cat)] = probs[:, self.columns.index(cat)]
        return out

    def flagged(self, scores: Array) -> npt.NDArray[np.bool_]:
        """Rows of ``score`` output at or above any category's proposed block threshold."""
        hit = np.zeros(len(scores), dtype=bool)
        for cat, th in self.block_thresholds.items():
            hit |= scores[:, CATEGORIES.index(cat)] >= th
        return hit

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        meta = {
            "format": FORMAT,
            "categories": list(self.categories),
            "columns": list(self.columns),
            "conditional": list(self.conditional),
            "share_floor": self.share_floor,
            "word_high": self.word_high,
            "char_range": list(self.char_range),
            "gamma": self.gamma,
            "block_thresholds": self.block_thresholds,
            "low_thresholds": self.low_thresholds,
            "info": self.info,
        }
        with path.open("wb") as fh:
            np.savez_compressed(
                fh,
                meta=np.array(json.dumps(meta, sort_keys=True)),
                word_vocab=np.array(self.words.terms(), dtype=str),
                word_idf=self.words.idf.astype(np.float32),
                char_vocab=np.array(self.chars.terms(), dtype=str),
                char_idf=self.chars.idf.astype(np.float32),
                landmarks=self.landmarks.astype(np.float16),
                word_weights=self.word_weights.astype(np.float16),
                char_weights=self.char_weights.astype(np.float16),
                emb_weights=self.emb_weights.astype(np.float32),
                kernel_weights=self.kernel_weights.astype(np.float32),
                bias=self.bias.astype(np.float32),
            )

    @classmethod
    def load(cls, path: Path) -> PromptHead:
        return cls.from_bytes(path.read_bytes(), str(path))

    @classmethod
    def from_bytes(cls, data: bytes, source: str = "prompt head") -> PromptHead:
        """The head from the bytes of its ``.npz`` (checked against their pin by the caller)."""
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            if meta.get("format") != FORMAT:
                raise ValueError(f"{source}: not a {FORMAT} artefact")
            f32 = np.float32
            low, high = meta["char_range"]
            return cls(
                categories=tuple(str(c) for c in meta["categories"]),
                columns=tuple(str(c) for c in meta["columns"]),
                conditional=tuple(str(c) for c in meta["conditional"]),
                share_floor=float(meta["share_floor"]),
                words=Tfidf(
                    {str(t): i for i, t in enumerate(z["word_vocab"])}, z["word_idf"].astype(f32)
                ),
                chars=Tfidf(
                    {str(t): i for i, t in enumerate(z["char_vocab"])}, z["char_idf"].astype(f32)
                ),
                word_high=int(meta["word_high"]),
                char_range=(int(low), int(high)),
                gamma=float(meta["gamma"]),
                landmarks=z["landmarks"].astype(f32),
                word_weights=z["word_weights"].astype(f32),
                char_weights=z["char_weights"].astype(f32),
                emb_weights=z["emb_weights"].astype(f32),
                kernel_weights=z["kernel_weights"].astype(f32),
                bias=z["bias"].astype(f32),
                block_thresholds={str(k): float(v) for k, v in meta["block_thresholds"].items()},
                low_thresholds={str(k): float(v) for k, v in meta["low_thresholds"].items()},
                info=dict(meta.get("info", {})),
            )


def default_head_path() -> Path:
    return Path(__file__).resolve().parent / "artefacts" / "prompt_head.npz"
