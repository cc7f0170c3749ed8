"""The shipped prompt head: numpy inference equals scikit-learn's, and it separates the obvious."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sklearn.feature_extraction.text import TfidfVectorizer

from gateway.domain import CATEGORIES
from gateway.policy.bundle import load_bundle
from gateway.runtime import Models, build_prompt_classifier
from gateway.safety.prompt_head import (
    PromptHead,
    Tfidf,
    char_wb_ngrams,
    default_head_path,
    word_ngrams,
)

POLICY_DIR = Path(__file__).resolve().parents[2] / "policies"

TEXTS = [
    "a lighthouse at dusk, oil painting, trending on artstation",
    "portrait of a   woman, highly detailed 8k",
    "bloody corpse in a dark alley, horror art",
    "x",
    "Ünïcode wörds and CAPS",
]


@pytest.mark.parametrize(
    ("kwargs", "grams"),
    [
        ({"ngram_range": (1, 2)}, word_ngrams),
        ({"analyzer": "char_wb", "ngram_range": (2, 5)}, char_wb_ngrams),
    ],
)
def test_tfidf_matches_scikit_learn(kwargs: dict[str, object], grams: object) -> None:
    vec = TfidfVectorizer(sublinear_tf=True, **kwargs).fit(TEXTS)  # type: ignore[arg-type]
    mine = Tfidf({str(k): int(v) for k, v in vec.vocabulary_.items()}, vec.idf_)
    expected = vec.transform([*TEXTS, "unseen words entirely"]).toarray()
    for i, text in enumerate([*TEXTS, "unseen words entirely"]):
        row = np.zeros(len(vec.vocabulary_))
        for j, v in mine.transform(grams(text)).items():  # type: ignore[operator]
            row[j] = v
        assert np.allclose(row, expected[i], atol=1e-6), text


def test_shipped_head_covers_every_category(shared_models: Models) -> None:
    head = PromptHead.load(default_head_path())
    assert set(head.categories) == set(CATEGORIES)
    texts = ["a man stabbed, blood and gore", "a bowl of fruit on a table", ""]
    scores = head.score(texts, shared_models.encoder.encode(texts))
    assert scores.shape == (3, len(CATEGORIES))
    gore = [CATEGORIES.index("violence"), CATEGORIES.index("shocking")]
    assert scores[0, gore].max() > 0.7 > scores[1].max()
    assert np.all(scores[1:] < 0.2) and np.all(scores[2] == 0)
    # the most likely I2P category carries the "unsafe" score; another one only if close
    i2p = [CATEGORIES.index(c) for c in head.conditional]
    assert sum(scores[0, i2p] >= 0.5) <= 2


def test_shipped_classifier_separates_obvious_prompts(shared_models: Models) -> None:
    """Through the full classifier (terms + head) with the shipped policy: the
    I2P data never shows the head the explicit words that the term lists catch."""
    bundle = load_bundle(POLICY_DIR)
    classifier = build_prompt_classifier(bundle, shared_models.encoder, shared_models.head)
    texts = [
        "a naked woman lying on a bed, erotic photo",
        "a man stabbed, blood and gore",
        "a bowl of fruit on a table",
        "a red bus driving down a city street",
        "portrait of a woman, 8 k, highly detailed",
    ]
    results = classifier.classify(texts)
    assert results[0].scores["sexual"] > 0.92
    assert max(results[1].scores["violence"], results[1].scores["shocking"]) > 0.92
    for r in results[2:4]:
        assert max(r.scores.values()) < 0.5, r
    # I2P is full of "portrait of a woman" prompts labelled sexual: allowed, at most low
    assert max(results[4].scores.values()) < 0.75, results[4]
