"""Text normalisation run before every text stage.

People dodge filters with look-alike letters, invisible characters, leetspeak, spaced or
dotted letters, repeated letters and odd casing. Three forms come out:

- ``display``: NFKC, invisible characters removed, look-alikes mapped, case-folded,
  whitespace collapsed (what the audit record shows as "normalised");
- ``clean``: ``display`` with spaced/dotted letters joined, leetspeak decoded inside words
  and runs of 3+ repeated letters shortened (what the embedding model reads);
- ``key``: ``clean`` with every repeated letter collapsed (what term lists match against;
  terms are keyed the same way).
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

# Zero-width, joiners, BOM, soft hyphen, word joiner, invisible operators, Mongolian vowel
# separator, combining grapheme joiner, Hangul fillers; plus every format (Cf) character.
_INVISIBLE = frozenset(
    "\u00ad\u034f\u061c\u115f\u1160\u17b4\u17b5\u180e\u200b\u200c\u200d\u200e\u200f"
    "\u202a\u202b\u202c\u202d\u202e\u2060\u2061\u2062\u2063\u2064\u206a\u206b\u206c"
    "\u206d\u206e\u206f\u3164\ufeff\uffa0"
)

# Look-alike letters from Cyrillic, Greek and other scripts (lower-case after casefold).
_CONFUSABLES = str.maketrans(
    {
        "а": "a",
        "в": "b",
        "с": "c",
        "ԁ": "d",
        "е": "e",
        "ё": "e",
        "һ": "h",
        "і": "i",
        "ї": "i",
        "ј": "j",
        "к": "k",
        "ӏ": "l",
        "м": "m",
        "н": "h",
        "о": "o",
        "р": "p",
        "ԛ": "q",
        "г": "r",
        "ѕ": "s",
        "т": "t",
        "ц": "u",
        "ѵ": "v",
        "ԝ": "w",
        "х": "x",
        "у": "y",
        "з": "3",
        "α": "a",
        "β": "b",
        "ε": "e",
        "η": "n",
        "ι": "i",
        "κ": "k",
        "ν": "v",
        "ο": "o",
        "ρ": "p",
        "τ": "t",
        "υ": "u",
        "χ": "x",
        "γ": "y",
        "ɑ": "a",
        "ɡ": "g",
        "ı": "i",
        "ȷ": "j",
        "ℓ": "l",
        "ɩ": "i",
        "ո": "n",
        "ս": "u",
        "օ": "o",
        "ᴀ": "a",
        "ʙ": "b",
        "ᴄ": "c",
        "ᴅ": "d",
        "ᴇ": "e",
        "ɢ": "g",
        "ʜ": "h",
        "ɪ": "i",
        "ᴊ": "j",
        "ᴋ": "k",
        "ʟ": "l",
        "ᴍ": "m",
        "ɴ": "n",
        "ᴏ": "o",
        "ᴘ": "p",
        "ʀ": "r",
        "ꜱ": "s",
        "ᴛ": "t",
        "ᴜ": "u",
        "ᴠ": "v",
        "ᴡ": "w",
        "ʏ": "y",
        "ᴢ": "z",
    }
)

_LEET = str.maketrans(
    {
        "0": "o",
        "1": "i",
        "3": "e",
        "4": "a",
        "5": "s",
        "7": "t",
        "8": "b",
        "9": "g",
        "@": "a",
        "$": "s",
        "!": "i",
        "|": "l",
        "€": "e",
        "+": "t",
    }
)

# "n u d e", "n.u.d.e", "n-u-d-e", "n_u_d_e", "n*u*d*e": 3+ single characters with separators.
# The same separator must repeat, so "a n.u.d.e" joins only "n.u.d.e".
_SPACED = re.compile(r"(?<![\w@$!|])[\w@$!|]([ .\-_*·•/\\]+)(?:[\w@$!|]\1)+[\w@$!|](?![\w@$!|])")
_SEPARATORS = re.compile(r"[ .\-_*·•/\\]+")
# A word that mixes letters with leet characters (so "1990" or "4k" stays as it is).
_LEET_WORD = re.compile(r"[\w@$!|+€]*[a-z][\w@$!|+€]*|[\w@$!|+€]*[@$!|€][\w@$!|+€]*")
# "4k", "8k", "3d", "35mm", "1080p", "70s": numbers with a unit, not leetspeak.
_MEASURE = re.compile(r"\d+(?:[a-z]{1,2}|th|st|nd|rd)")
_REPEAT3 = re.compile(r"([a-z])\1{2,}")
_REPEAT2 = re.compile(r"([a-z])\1+")
_SPACE = re.compile(r"\s+")


@dataclass(frozen=True)
class NormalisedText:
    original: str
    display: str
    clean: str
    key: str


def strip_invisible(text: str) -> str:
    return "".join(
        ch
        for ch in text
        if ch not in _INVISIBLE
        and unicodedata.category(ch) != "Cf"
        and not ("\ufe00" <= ch <= "\ufe0f")
        and not ("\U000e0000" <= ch <= "\U000e007f")
    )


def strip_marks(text: str) -> str:
    decomposed = unicodedata.normalize("NFKD", text)
    return unicodedata.normalize(
        "NFC", "".join(ch for ch in decomposed if unicodedata.category(ch) != "Mn")
    )


def display_form(text: str) -> str:
    text = unicodedata.normalize("NFKC", text)
    text = strip_invisible(text)
    text = text.casefold().translate(_CONFUSABLES)
    text = strip_marks(text)
    return _SPACE.sub(" ", text).strip()


def _join_spaced(text: str) -> str:
    def join(m: re.Match[str]) -> str:
        run = m.group(0)
        if m.group(1).isspace() and run[0] in "ai" and len(run) >= 7:
            # "a n u d e": the English words "a" and "i" stay apart from the run
            return run[0] + " " + _SEPARATORS.sub("", run[2:])
        return _SEPARATORS.sub("", run)

    return _SPACED.sub(join, text)


def _decode_leet(text: str) -> str:
    def fix(m: re.Match[str]) -> str:
        word = m.group(0)
        if word.isdigit() or _MEASURE.fullmatch(word):
            return word
        body = word.rstrip("!")
        return body.translate(_LEET) + word[len(body) :]

    return _LEET_WORD.sub(fix, text)


def clean_form(display: str) -> str:
    text = _join_spaced(display)
    text = _decode_leet(text)
    return _REPEAT3.sub(r"\1", text)


def key_form(clean: str) -> str:
    return _REPEAT2.sub(r"\1", clean)


def normalise(text: str) -> NormalisedText:
    display = display_form(text)
    clean = clean_form(display)
    return NormalisedText(original=text, display=display, clean=clean, key=key_form(clean))


def term_key(term: str) -> str:
    """The form a policy term is matched in (same pipeline as prompts, minus spacing tricks)."""
    return key_form(_decode_leet(display_form(term)))
