"""Prompt classifier throughput and latency (aim: >= 100 prompts/s batched on 2 CPU cores).

Builds the classifier exactly as the gateway does (policy bundle + MiniLM + trained head),
then measures, on real prompts from the development data:
- batched throughput (prompts/s) at the batch size `gateway moderate` uses;
- single-prompt latency p50/p95 (what one generation request pays);
against baselines measured in the same run: the bare MiniLM encoder on the same texts (the
floor any embedding-based classifier pays), through the shipped ONNX Runtime backend and
through PyTorch eager (the previous backend).

    .venv/bin/python bench/moderation.py [--prompts 1024] [--single 100]
"""

from __future__ import annotations

import argparse
import csv
import statistics
import time
from pathlib import Path

import torch

from gateway.moderate_file import CHUNK
from gateway.policy.bundle import load_bundle
from gateway.runtime import build_prompt_classifier
from gateway.safety.normalize import normalise
from gateway.safety.prompt_head import PromptHead, default_head_path
from gateway.safety.text_encoder import MiniLMEncoder

REPO = Path(__file__).resolve().parent.parent
DATA = REPO / "data" / "dev"


def _prompts(n: int) -> list[str]:
    rows: list[str] = []
    for name in ("i2p-dev.csv", "coco-captions-dev.csv"):
        path = DATA / name
        if path.is_file():
            with path.open(newline="", encoding="utf-8") as fh:
                rows += [r["prompt"] for r in csv.DictReader(fh)]
    if not rows:
        rows = [f"a watercolour painting of a lighthouse number {i}" for i in range(n)]
    # distinct texts, so the encoder's cache does not flatter the figures
    return [f"{rows[i % len(rows)]} #{i}" for i in range(n)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=1024)
    parser.add_argument("--single", type=int, default=100)
    args = parser.parse_args()
    bundle = load_bundle(REPO / "policies")
    encoder = MiniLMEncoder(cache_size=0)  # the shipped default: the ONNX Runtime backend
    torch_encoder = MiniLMEncoder(cache_size=0, backend="torch")
    head = PromptHead.load(default_head_path())
    classifier = build_prompt_classifier(bundle, encoder, head)
    texts = _prompts(args.prompts + args.single)
    batch_texts, single_texts = texts[: args.prompts], texts[args.prompts :]
    classifier.classify(batch_texts[:32])  # warm-up
    t0 = time.perf_counter()
    for i in range(0, len(batch_texts), CHUNK):
        classifier.classify(batch_texts[i : i + CHUNK])
    batched = len(batch_texts) / (time.perf_counter() - t0)
    t0 = time.perf_counter()
    for i in range(0, len(batch_texts), CHUNK):
        encoder.encode([normalise(t).clean for t in batch_texts[i : i + CHUNK]])
    bare = len(batch_texts) / (time.perf_counter() - t0)
    t0 = time.perf_counter()
    for i in range(0, len(batch_texts), CHUNK):
        torch_encoder.encode([normalise(t).clean for t in batch_texts[i : i + CHUNK]])
    bare_torch = len(batch_texts) / (time.perf_counter() - t0)
    lat: list[float] = []
    for text in single_texts:
        t0 = time.perf_counter()
        classifier.classify([text])
        lat.append((time.perf_counter() - t0) * 1000)
    p50, p95 = statistics.median(lat), sorted(lat)[int(0.95 * len(lat)) - 1]
    print(
        f"prompt classifier on {torch.get_num_threads()} torch threads, batch {CHUNK}, "
        f"{len(batch_texts)} prompts"
    )
    print(f"{'':40}{'prompts/s':>12}")
    print(f"{'classifier (normalise+terms+MiniLM+head)':40}{batched:12.1f}")
    print(f"{'baseline: bare MiniLM encode (' + encoder.backend + ')':40}{bare:12.1f}")
    print(f"{'baseline: bare MiniLM encode (torch)':40}{bare_torch:12.1f}")
    print(f"classifier / bare throughput: {batched / bare:.2f}")
    print(f"single prompt latency: p50 {p50:.1f} ms, p95 {p95:.1f} ms ({len(lat)} prompts)")
    print(f"aim: >= 100 prompts/s batched: {'MET' if batched >= 100 else 'NOT MET'}")


if __name__ == "__main__":
    main()
