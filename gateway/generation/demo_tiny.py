"""Build ``demo-tiny``: a tiny Stable Diffusion pipeline with random weights.

Built from small configs with a fixed seed, saved with ``save_pretrained`` and loaded back
through the same ``from_pretrained`` path real weights use. Its images are noise; it exists
so the whole governed path runs anywhere with no download. A manifest of the weight files'
sha256 is written next to it and checked on every load.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

from gateway.generation.pins import MANIFEST_NAME, hash_weight_files

# 2: the VAE down-samples 8x (as Stable Diffusion does), so 256x256 and 512x512 run on a CPU
VERSION = 2


def is_current(path: Path) -> bool:
    """A demo-tiny folder built by this version of the builder (older ones are rebuilt)."""
    try:
        manifest = json.loads((path / MANIFEST_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(manifest, dict) and manifest.get("version") == VERSION


def _byte_vocab() -> dict[str, int]:
    bs = list(range(33, 127)) + list(range(161, 173)) + list(range(174, 256))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    chars = [chr(c) for c in cs]
    vocab = {c: i for i, c in enumerate(chars + [c + "</w>" for c in chars])}
    vocab["<|startoftext|>"] = 512
    vocab["<|endoftext|>"] = 513
    return vocab


def build_demo_tiny(dest: Path, *, seed: int = 0) -> Path:
    """Write the pipeline folder to ``dest`` (atomically) and return it."""
    import torch
    from diffusers import (
        AutoencoderKL,
        DDIMScheduler,
        StableDiffusionPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    dest.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".demo-tiny-", dir=dest.parent))
    try:
        tok_dir = work / "_tokenizer_src"
        tok_dir.mkdir()
        (tok_dir / "vocab.json").write_text(json.dumps(_byte_vocab()), encoding="utf-8")
        (tok_dir / "merges.txt").write_text("#version: 0.2\n", encoding="utf-8")
        tokenizer = CLIPTokenizer.from_pretrained(str(tok_dir), model_max_length=77)
        shutil.rmtree(tok_dir)

        torch.manual_seed(seed)
        unet = UNet2DConditionModel(
            block_out_channels=(4, 8),
            layers_per_block=1,
            sample_size=32,
            time_cond_proj_dim=None,
            in_channels=4,
            out_channels=4,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
            cross_attention_dim=8,
            norm_num_groups=2,
        )
        scheduler = DDIMScheduler(
            beta_start=0.00085,
            beta_end=0.012,
            beta_schedule="scaled_linear",
            clip_sample=False,
            set_alpha_to_one=False,
        )
        torch.manual_seed(seed)
        vae = AutoencoderKL(
            block_out_channels=[4, 8, 8, 8],  # 8x down-sampling, as in Stable Diffusion
            in_channels=3,
            out_channels=3,
            down_block_types=["DownEncoderBlock2D"] * 4,
            up_block_types=["UpDecoderBlock2D"] * 4,
            latent_channels=4,
            norm_num_groups=2,
        )
        torch.manual_seed(seed)
        text_encoder = CLIPTextModel(
            CLIPTextConfig(
                bos_token_id=512,
                eos_token_id=513,
                pad_token_id=513,
                hidden_size=8,
                intermediate_size=16,
                num_attention_heads=2,
                num_hidden_layers=2,
                vocab_size=1000,
            )
        )
        pipe = StableDiffusionPipeline(
            vae=vae,
            text_encoder=text_encoder,
            tokenizer=tokenizer,
            unet=unet,
            scheduler=scheduler,
            safety_checker=None,
            feature_extractor=None,
            image_encoder=None,
            requires_safety_checker=False,
        )
        out = work / "pipeline"
        pipe.save_pretrained(str(out), safe_serialization=True)
        manifest = {
            "model": "demo-tiny",
            "version": VERSION,
            "seed": seed,
            "files": hash_weight_files(out),
        }
        (out / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2), encoding="utf-8")
        if dest.exists():
            shutil.rmtree(dest)
        out.rename(dest)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return dest
