"""Pipelines for the throughput benchmarks: demo-tiny from its folder, or SD-shaped from configs.

``sd15`` and ``sdxl`` build Stable Diffusion 1.5- and XL-shaped pipelines (UNet, VAE, CLIP text
encoders with the real architectures' sizes) with random weights, so a GPU can be measured
without downloading anything. Their images are noise; their cost is the real models' cost.
The tokenizer is demo-tiny's byte-level one (prompt length, not vocabulary, sets the cost).
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

SHAPES = ("demo-tiny", "sd15", "sdxl")


def _tokenizer() -> Any:
    from transformers import CLIPTokenizer

    from gateway.generation.demo_tiny import _byte_vocab

    folder = Path(tempfile.mkdtemp(prefix="tok-"))
    try:
        (folder / "vocab.json").write_text(json.dumps(_byte_vocab()), encoding="utf-8")
        (folder / "merges.txt").write_text("#version: 0.2\n", encoding="utf-8")
        return CLIPTokenizer.from_pretrained(str(folder), model_max_length=77)
    finally:
        shutil.rmtree(folder)


def _text_config(hidden: int, layers: int, heads: int, inter: int, act: str) -> Any:
    from transformers import CLIPTextConfig

    return CLIPTextConfig(
        bos_token_id=512,
        eos_token_id=513,
        pad_token_id=513,
        vocab_size=49408,
        hidden_size=hidden,
        intermediate_size=inter,
        num_attention_heads=heads,
        num_hidden_layers=layers,
        max_position_embeddings=77,
        hidden_act=act,
        projection_dim=hidden,
    )


def _vae() -> Any:
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        block_out_channels=(128, 256, 512, 512),
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        latent_channels=4,
        layers_per_block=2,
    )


def _scheduler() -> Any:
    from diffusers import DDIMScheduler

    return DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
    )


def build_sd15() -> Any:
    from diffusers import StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel

    unet = UNet2DConditionModel(
        sample_size=64,
        layers_per_block=2,
        block_out_channels=(320, 640, 1280, 1280),
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
        cross_attention_dim=768,
        attention_head_dim=8,
    )
    text = CLIPTextModel(_text_config(768, 12, 12, 3072, "quick_gelu"))
    return StableDiffusionPipeline(
        vae=_vae(),
        text_encoder=text,
        tokenizer=_tokenizer(),
        unet=unet,
        scheduler=_scheduler(),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def build_sdxl() -> Any:
    from diffusers import StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    unet = UNet2DConditionModel(
        sample_size=128,
        layers_per_block=2,
        block_out_channels=(320, 640, 1280),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        transformer_layers_per_block=(1, 2, 10),
        attention_head_dim=(5, 10, 20),
        cross_attention_dim=2048,
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=256,
        projection_class_embeddings_input_dim=2816,
    )
    text = CLIPTextModel(_text_config(768, 12, 12, 3072, "quick_gelu"))
    text2 = CLIPTextModelWithProjection(_text_config(1280, 32, 20, 5120, "gelu"))
    tokenizer = _tokenizer()
    return StableDiffusionXLPipeline(
        vae=_vae(),
        text_encoder=text,
        text_encoder_2=text2,
        tokenizer=tokenizer,
        tokenizer_2=tokenizer,
        unet=unet,
        scheduler=_scheduler(),
    )


def build_pipeline(shape: str, *, device: str, dtype: str, demo_dir: Path | None = None) -> Any:
    """The pipeline, on ``device`` in ``dtype``, progress bar off."""
    import torch

    torch_dtype = getattr(torch, dtype)
    if shape == "demo-tiny":
        from diffusers import DiffusionPipeline

        if demo_dir is None:
            raise ValueError("demo-tiny needs its folder")
        pipe = DiffusionPipeline.from_pretrained(
            str(demo_dir), local_files_only=True, torch_dtype=torch_dtype
        )
    else:
        torch.manual_seed(0)
        with torch.device(device):
            pipe = build_sd15() if shape == "sd15" else build_sdxl()
    pipe = pipe.to(device=device, dtype=torch_dtype)
    pipe.set_progress_bar_config(disable=True)
    return pipe
