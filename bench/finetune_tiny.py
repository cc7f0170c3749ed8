"""Fine-tuning cost on this machine: LoRA training of demo-tiny, seconds per step and peak
memory, measured in a clean subprocess per configuration (nothing else loaded in it).

    python bench/finetune_tiny.py [--steps 20] [--resolution 64 256] [--threads N]

Prints one line per resolution: time per step, wall and CPU (process time, all threads;
less sensitive to other jobs on a shared machine), after the first step (warm-up), the process's
peak resident memory, and (for comparison) the bare-load baseline: the same process loading
demo-tiny without training.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = r"""
import json, resource, sys, time
from pathlib import Path
from PIL import Image
from gateway.generation.demo_tiny import build_demo_tiny
from gateway.finetune.train import TrainConfig, train_lora
from diffusers import StableDiffusionPipeline
work, steps, resolution = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
train, threads = sys.argv[4] == "1", int(sys.argv[5])
if threads:
    import torch
    torch.set_num_threads(threads)
if not (work / "demo-tiny").exists():
    build_demo_tiny(work / "demo-tiny")
pipe = StableDiffusionPipeline.from_pretrained(str(work / "demo-tiny"), local_files_only=True)
imgs = work / "imgs"
imgs.mkdir(exist_ok=True)
for i in range(12):
    Image.new("RGB", (resolution, resolution), (20 * i, 100, 200 - 10 * i)).save(imgs / f"{i}.png")
out = {}
if train:
    samples = [(p, "a brand image") for p in sorted(imgs.glob("*.png"))]
    times, cpu = [], []
    def progress(done, total, loss):
        times.append(time.perf_counter())
        cpu.append(time.process_time())
    cfg = TrainConfig(steps=steps, rank=4, resolution=resolution, checkpoint_every=0)
    out_dir = work / f"out-{resolution}"
    train_lora(pipe, samples, cfg, out_dir, resume_key="bench", progress=progress)
    deltas = [b - a for a, b in zip(times, times[1:])]
    out["s_per_step"] = sum(deltas) / len(deltas)
    out["cpu_s_per_step"] = (cpu[-1] - cpu[0]) / (len(cpu) - 1)
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
out["peak_rss_mib"] = rss / 2**20
print(json.dumps(out))
"""


def _child(work: Path, steps: int, resolution: int, train: bool, threads: int) -> dict[str, float]:
    run = subprocess.run(
        [
            sys.executable,
            "-c",
            CHILD,
            str(work),
            str(steps),
            str(resolution),
            "1" if train else "0",
            str(threads),
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    result: dict[str, float] = json.loads(run.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--resolution", type=int, nargs="+", default=[64, 256])
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        base = _child(work, 0, 64, train=False, threads=args.threads)
        print(f"baseline (load demo-tiny, no training): peak RSS {base['peak_rss_mib']:.0f} MiB")
        for res in args.resolution:
            got = _child(work, args.steps, res, train=True, threads=args.threads)
            print(
                f"demo-tiny LoRA rank 4, batch 1, {res}x{res}, {args.steps} steps, "
                f"threads {args.threads or 'default'}: "
                f"{got['s_per_step'] * 1000:.1f} ms/step wall, "
                f"{got['cpu_s_per_step'] * 1000:.1f} ms/step CPU time, "
                f"peak RSS {got['peak_rss_mib']:.0f} MiB "
                f"(+{got['peak_rss_mib'] - base['peak_rss_mib']:.0f} MiB over the baseline)"
            )


if __name__ == "__main__":
    main()
