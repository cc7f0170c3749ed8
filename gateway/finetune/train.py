"""LoRA training on a Stable Diffusion UNet with peft (diffusers' train_text_to_image_lora).

The VAE and text encoder are frozen, so each image's latent distribution and each caption's
embedding are computed once. Every random draw (LoRA init, batch order, noise, timesteps,
latent samples) comes from one seeded generator on the CPU, so a run is reproducible on a
CPU, and a checkpoint holds that generator's state with the LoRA weights and the optimizer:
a run resumed from it produces the same adapter as one that never stopped.
"""

from __future__ import annotations

import hashlib
import json
import math
import resource
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from PIL import Image

ADAPTER_FILE = "pytorch_lora_weights.safetensors"
CHECKPOINT_FILE = "checkpoint.pt"
TARGET_MODULES = ["to_k", "to_q", "to_v", "to_out.0"]


class TrainingCancelled(Exception):
    """Stopped on request; the checkpoint written at the stop lets the job resume."""


class TrainingUnsupported(ValueError):
    """The base pipeline cannot be fine-tuned by this trainer."""


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 100
    rank: int = 4
    resolution: int = 512
    learning_rate: float = 1e-4
    batch_size: int = 1
    seed: int = 0
    checkpoint_every: int = 50

    def key(self, manifest_sha256: str, base_sha256: str) -> str:
        """What a checkpoint must match to be resumed (same data, base and settings)."""
        body = json.dumps([asdict(self), manifest_sha256, base_sha256], sort_keys=True)
        return hashlib.sha256(body.encode()).hexdigest()


@dataclass(frozen=True)
class TrainResult:
    adapter: Path
    steps: int
    resumed_from: int
    final_loss: float
    seconds_per_step: float
    peak_memory_bytes: int
    memory_kind: str  # "cuda_max_allocated" or "process_max_rss"
    device: str


Progress = Callable[[int, int, float], None]
ShouldStop = Callable[[], bool]


def _prepare(image: Image.Image, size: int) -> Image.Image:
    """Resize the short side to ``size`` and centre-crop (as the diffusers script does)."""
    image = image.convert("RGB")
    scale = size / min(image.size)
    w, h = max(size, round(image.width * scale)), max(size, round(image.height * scale))
    image = image.resize((w, h), Image.Resampling.BICUBIC)
    left, top = (w - size) // 2, (h - size) // 2
    return image.crop((left, top, left + size, top + size))


def train_lora(
    pipeline: Any,
    samples: Sequence[tuple[Path, str]],
    config: TrainConfig,
    work_dir: Path,
    *,
    resume_key: str,
    progress: Progress | None = None,
    should_stop: ShouldStop | None = None,
) -> TrainResult:
    """Train, checkpointing into ``work_dir``; write ``work_dir/ADAPTER_FILE``."""
    import numpy as np
    import torch
    from diffusers import DDPMScheduler
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict, set_peft_model_state_dict

    unet, vae = getattr(pipeline, "unet", None), getattr(pipeline, "vae", None)
    tokenizer, text_encoder = (
        getattr(pipeline, "tokenizer", None),
        getattr(pipeline, "text_encoder", None),
    )
    if unet is None or vae is None or tokenizer is None or text_encoder is None:
        raise TrainingUnsupported(
            f"{type(pipeline).__name__} is not a UNet + VAE + CLIP text encoder pipeline"
        )
    if getattr(pipeline, "text_encoder_2", None) is not None:
        raise TrainingUnsupported("SDXL (two text encoders) is not supported by this trainer yet")
    if config.resolution % 8 or config.resolution < 8:
        raise TrainingUnsupported("resolution must be a positive multiple of 8")
    device = unet.device
    weight_dtype = unet.dtype
    work_dir.mkdir(parents=True, exist_ok=True)
    for module in (unet, vae, text_encoder):
        module.requires_grad_(False)
    gen = torch.Generator(device="cpu").manual_seed(config.seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        unet.add_adapter(
            LoraConfig(
                r=config.rank,
                lora_alpha=config.rank,
                init_lora_weights="gaussian",
                target_modules=TARGET_MODULES,
            )
        )
    params = [p for p in unet.parameters() if p.requires_grad]
    for p in params:
        p.data = p.data.float()  # trainable weights in float32 (mixed precision on GPU)
    optimizer = torch.optim.AdamW(params, lr=config.learning_rate)
    scheduler = DDPMScheduler.from_config(pipeline.scheduler.config)
    prediction = scheduler.config.get("prediction_type", "epsilon")

    # frozen encoders: each image's latent distribution and each caption's embedding, once
    means, stds, embeds = [], [], []
    with torch.no_grad():
        for path, caption in samples:
            with Image.open(path) as opened:
                pixels = np.asarray(_prepare(opened, config.resolution), dtype=np.float32)
            x = torch.from_numpy(pixels / 127.5 - 1.0).permute(2, 0, 1)[None]
            dist = vae.encode(x.to(device, vae.dtype)).latent_dist
            means.append(dist.mean.float().cpu())
            stds.append(dist.std.float().cpu())
            ids = tokenizer(
                [caption],
                padding="max_length",
                max_length=tokenizer.model_max_length,
                truncation=True,
                return_tensors="pt",
            ).input_ids
            embeds.append(text_encoder(ids.to(device))[0].float().cpu())
    scaling = float(vae.config.scaling_factor)

    checkpoint = work_dir / CHECKPOINT_FILE
    start = 0
    if checkpoint.is_file():
        state = torch.load(checkpoint, map_location="cpu", weights_only=False)
        if state.get("key") == resume_key:
            set_peft_model_state_dict(unet, state["lora"])
            optimizer.load_state_dict(state["optimizer"])
            gen.set_state(state["generator"])
            start = int(state["step"])

    def save_checkpoint(step: int) -> None:
        tmp = checkpoint.with_suffix(".tmp")
        torch.save(
            {
                "key": resume_key,
                "step": step,
                "lora": get_peft_model_state_dict(unet),
                "optimizer": optimizer.state_dict(),
                "generator": gen.get_state(),
            },
            tmp,
        )
        tmp.replace(checkpoint)

    if torch.cuda.is_available() and device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    n = len(samples)
    per_epoch = max(1, math.ceil(n / config.batch_size))
    unet.train()
    loss_value = float("nan")
    t0 = time.perf_counter()
    order: list[int] = []
    for step in range(start, config.steps):
        if should_stop is not None and should_stop():
            save_checkpoint(step)
            raise TrainingCancelled(f"stopped at step {step} of {config.steps}")
        if step % per_epoch == 0 or not order:  # each epoch's shuffle, from (seed, epoch)
            epoch_gen = torch.Generator(device="cpu").manual_seed(
                config.seed * 1_000_003 + step // per_epoch
            )
            order = torch.randperm(n, generator=epoch_gen).tolist()
        at = (step % per_epoch) * config.batch_size
        batch = order[at : at + config.batch_size] or order[: config.batch_size]
        mean = torch.cat([means[i] for i in batch])
        std = torch.cat([stds[i] for i in batch])
        latents = (mean + std * torch.randn(mean.shape, generator=gen)) * scaling
        noise = torch.randn(latents.shape, generator=gen)
        timesteps = torch.randint(
            0, scheduler.config.num_train_timesteps, (len(batch),), generator=gen
        )
        noisy = scheduler.add_noise(latents, noise, timesteps)
        target = (
            scheduler.get_velocity(latents, noise, timesteps)
            if prediction == "v_prediction"
            else noise
        )
        cond = torch.cat([embeds[i] for i in batch])
        mixed = device.type == "cuda" and weight_dtype != torch.float32
        with torch.autocast(device.type, dtype=weight_dtype, enabled=mixed):
            pred = unet(
                noisy.to(device, weight_dtype), timesteps.to(device), cond.to(device, weight_dtype)
            ).sample
        loss = torch.nn.functional.mse_loss(pred.float(), target.to(device).float())
        loss.backward()  # type: ignore[no-untyped-call]
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        loss_value = float(loss.detach().cpu())
        done = step + 1
        if config.checkpoint_every and done % config.checkpoint_every == 0 and done < config.steps:
            save_checkpoint(done)
        if progress is not None:
            progress(done, config.steps, loss_value)
    elapsed = time.perf_counter() - t0
    unet.eval()
    layers = convert_state_dict_to_diffusers(get_peft_model_state_dict(unet))
    type(pipeline).save_lora_weights(
        str(work_dir), unet_lora_layers=layers, safe_serialization=True, weight_name=ADAPTER_FILE
    )
    checkpoint.unlink(missing_ok=True)
    ran = max(1, config.steps - start)
    if device.type == "cuda":
        peak, kind = int(torch.cuda.max_memory_allocated(device)), "cuda_max_allocated"
    else:
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        peak = rss if sys.platform == "darwin" else rss * 1024
        kind = "process_max_rss"
    return TrainResult(
        adapter=work_dir / ADAPTER_FILE,
        steps=config.steps,
        resumed_from=start,
        final_loss=loss_value,
        seconds_per_step=elapsed / ran,
        peak_memory_bytes=peak,
        memory_kind=kind,
        device=str(device),
    )
