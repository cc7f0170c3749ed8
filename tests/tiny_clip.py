"""A tiny, randomly initialised open_clip model saved in the ``local-dir:`` layout.

Loaded through ``open_clip.create_model_and_transforms("local-dir:" + dir)``, the same loader
real weights use (see docs/reference models.md §3).
"""

from __future__ import annotations

import json
from pathlib import Path

import open_clip
import torch
from safetensors.torch import save_file

from gateway.safety.artefacts import CLIP_FILES, folder_sha256

TINY_MODEL_CFG: dict[str, object] = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 32, "patch_size": 8, "head_width": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
}
OPENAI_MEAN = [0.48145466, 0.4578275, 0.40821073]
OPENAI_STD = [0.26862954, 0.26130258, 0.27577711]


def build_tiny_clip(dest: Path, seed: int = 0) -> Path:
    """Write ``open_clip_config.json`` and ``open_clip_model.safetensors`` into ``dest``."""
    dest.mkdir(parents=True, exist_ok=True)
    config = {
        "model_cfg": TINY_MODEL_CFG,
        "preprocess_cfg": {"mean": OPENAI_MEAN, "std": OPENAI_STD},
    }
    (dest / "open_clip_config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    torch.manual_seed(seed)
    model = open_clip.create_model("local-dir:" + str(dest), device="cpu")
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(dest / "open_clip_model.safetensors"))
    return dest


def clip_pin(folder: Path) -> str:
    """The sha256 that ``GATEWAY_CLIP_SHA256`` pins ``folder`` by."""
    return folder_sha256(folder, CLIP_FILES)[0]
