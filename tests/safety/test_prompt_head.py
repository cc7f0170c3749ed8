"""The shipped prompt head: numpy inference equals scikit-learn's, and it separates the obvious."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.feature_extraction.text import TfidfVectorizer

from gateway.domain import CATEGORIES
from gateway.runtime import Models
from gateway.safety.prompt_head import (
    PromptHead,
    Tfidf,
    char_wb_ngrams,
    default_head_path,
    word_ngrams,
)

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


def test_shipped_head_separates_obvious_prompts(shared_models: Models) -> None:
    head = PromptHead.load(default_head_path())
    assert "sexual/minors" not in head.categories and len(head.categories) == 7
    texts = [
        "a naked woman lying on a bed, erotic photo",
        "a man stabbed, blood and gore",
        "a bowl of fruit on a table",
        "a red bus driving down a city street",
    ]
    scores = head.score(texts, shared_models.encoder.encode(texts))
    sexual, violence = CATEGORIES.index("sexual"), CATEGORIES.index("violence")
    shocking = CATEGORIES.index("shocking")
    assert scores[0, sexual] > 0.7 and max(scores[1, violence], scores[1, shocking]) > 0.7
    assert scores[2].max() < 0.5 and scores[3].max() < 0.5
    assert np.all(scores[:, CATEGORIES.index("sexual/minors")] == 0)
