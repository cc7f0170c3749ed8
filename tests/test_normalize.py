"""Obfuscation suite: look-alikes, invisible characters, leetspeak, spacing, repeats, casing."""

from __future__ import annotations

import pytest

from gateway.policy.bundle import load_bundle
from gateway.safety.normalize import normalise
from tests.conftest import REPO


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("naked", "naked"),
        ("NaKeD", "naked"),
        ("n4k3d", "naked"),
        ("n@ked", "naked"),
        ("n u d e", "nude"),
        ("n.u.d.e", "nude"),
        ("n-u-d-e", "nude"),
        ("n_u_d_e", "nude"),
        ("nuuuuude", "nude"),
        ("nа\u200bked", "naked"),  # Cyrillic a and a zero-width space
        ("ｎａｋｅｄ", "naked"),  # full-width
        ("n\u00adu\u2060d\ufeffe", "nude"),  # soft hyphen, word joiner, BOM
        ("nüde", "nude"),
        ("ɴᴜᴅᴇ", "nude"),
        ("a n u d e woman", "a nude woman"),
    ],
)
def test_obfuscations_are_undone(text: str, key: str) -> None:
    assert normalise(text).key == key


@pytest.mark.parametrize(
    "text",
    ["a 4k photo of a 1990s street, 35mm", "3d render of a castle", "I love you!", "a b2 bomber"],
)
def test_ordinary_text_is_left_readable(text: str) -> None:
    assert normalise(text).clean == text.lower()


def test_display_form_keeps_the_prompt_recognisable() -> None:
    n = normalise("  A  Ｌｉｇｈｔｈｏｕｓｅ\u200b at   DUSK ")
    assert n.display == "a lighthouse at dusk"


OBFUSCATIONS = [
    lambda w: w.upper(),
    lambda w: " ".join(w),
    lambda w: ".".join(w),
    lambda w: w.replace("a", "4").replace("e", "3").replace("o", "0").replace("i", "1"),
    lambda w: w.replace("a", "а").replace("e", "е").replace("o", "о"),  # Cyrillic look-alikes
    lambda w: "\u200b".join(w),
    lambda w: "".join(c * 3 for c in w),
]


def test_every_term_in_the_seed_policy_survives_obfuscation() -> None:
    """Each single-word term, rewritten each way, still normalises to the term itself."""
    bundle = load_bundle(REPO / "policies")
    terms = sorted(
        {
            t
            for c in bundle.content.categories.values()
            for t in c.terms
            if t.isalpha() and len(t) >= 4
        }
    )
    misses = []
    for term in terms:
        expected = normalise(term).key
        for rewrite in OBFUSCATIONS:
            if normalise(rewrite(term)).key != expected:
                misses.append((term, rewrite(term)))
    assert not misses, misses[:10]
