"""The trained prompt head: per-category probabilities from MiniLM embeddings and TF-IDF.

Two logistic regressions per category, one on the sentence embedding and one on word (1-2)
and character (2-5, within words) TF-IDF n-grams of the normalised text; the category
probability is the sigmoid of their averaged logits. Inference is plain numpy over arrays
stored in one ``.npz`` (no pickled objects), reproducing scikit-learn's tokenisation.
Categories without training labels (``sexual/minors``) score 0 here and rely on the
policy's term lists and exemplars.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path

import numpy as np
import numpy.typing as npt

from gateway.domain import CATEGORIES

_TOKEN = re.compile(r"(?u)\b\w\w+\b")
_SPACES = re.compile(r"\s\s+")
Array = npt.NDArray[np.float32]


def word_ngrams(text: str) -> list[str]:
    tokens = _TOKEN.findall(text.lower())
    return tokens + [f"{a} {b}" for a, b in pairwise(tokens)]


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


@dataclass(frozen=True)
class PromptHead:
    categories: tuple[str, ...]  # the trained ones
    words: Tfidf
    chars: Tfidf
    emb_weights: Array  # [len(categories), dim]
    emb_bias: Array
    text_weights: Array  # [len(categories), len(words) + len(chars)]
    text_bias: Array

    def score(self, clean_texts: Sequence[str], embeddings: Array) -> Array:
        """[N, len(CATEGORIES)] probabilities (0 for untrained categories)."""
        n_words = len(self.words.vocabulary)
        logits_e = embeddings @ self.emb_weights.T + self.emb_bias
        logits_t = np.tile(self.text_bias, (len(clean_texts), 1)).astype(np.float32)
        for i, text in enumerate(clean_texts):
            row = self.words.transform(word_ngrams(text))
            row.update(
                {n_words + j: v for j, v in self.chars.transform(char_wb_ngrams(text)).items()}
            )
            if row:
                idx = np.fromiter(row.keys(), dtype=np.int64)
                val = np.fromiter(row.values(), dtype=np.float32)
                logits_t[i] += self.text_weights[:, idx] @ val
        probs = 1.0 / (1.0 + np.exp(-(logits_e + logits_t) / 2.0))
        out = np.zeros((len(clean_texts), len(CATEGORIES)), dtype=np.float32)
        for k, cat in enumerate(self.categories):
            out[:, CATEGORIES.index(cat)] = probs[:, k]
        return out

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(
            path,
            categories=np.array(self.categories),
            word_vocab=np.array(
                sorted(self.words.vocabulary, key=self.words.vocabulary.__getitem__)
            ),
            word_idf=self.words.idf,
            char_vocab=np.array(
                sorted(self.chars.vocabulary, key=self.chars.vocabulary.__getitem__)
            ),
            char_idf=self.chars.idf,
            emb_weights=self.emb_weights,
            emb_bias=self.emb_bias,
            text_weights=self.text_weights.astype(np.float16),
            text_bias=self.text_bias,
        )

    @classmethod
    def load(cls, path: Path) -> PromptHead:
        with np.load(path, allow_pickle=False) as z:
            words = Tfidf(
                {str(t): i for i, t in enumerate(z["word_vocab"])}, z["word_idf"].astype(np.float32)
            )
            chars = Tfidf(
                {str(t): i for i, t in enumerate(z["char_vocab"])}, z["char_idf"].astype(np.float32)
            )
            return cls(
                categories=tuple(str(c) for c in z["categories"]),
                words=words,
                chars=chars,
                emb_weights=z["emb_weights"].astype(np.float32),
                emb_bias=z["emb_bias"].astype(np.float32),
                text_weights=z["text_weights"].astype(np.float32),
                text_bias=z["text_bias"].astype(np.float32),
            )


def default_head_path() -> Path:
    return Path(__file__).resolve().parent / "artefacts" / "prompt_head.npz"
