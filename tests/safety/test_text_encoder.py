"""MiniLM through ONNX Runtime computes the same embeddings as through PyTorch."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from gateway.safety.text_encoder import MiniLMEncoder, sidecar

TEXTS = [
    "a lighthouse at dusk, oil painting",
    "x",
    "portrait of a woman, " * 60,  # longer than the 256-token truncation
    "Ünïcode wörds and CAPS",
    "a bowl of fruit on a table",
]


def test_onnx_backend_matches_torch_and_caches_its_export(tmp_path: Path) -> None:
    torch_enc = MiniLMEncoder(cache_size=0, backend="torch")
    onnx_enc = MiniLMEncoder(cache_size=0, backend="onnx", onnx_cache_dir=tmp_path)
    assert (torch_enc.backend, onnx_enc.backend) == ("torch", "onnx")
    exported = list(tmp_path.glob("minilm-*.onnx"))
    assert len(exported) == 1 and exported[0].stat().st_size > 10_000_000
    a, b = torch_enc.encode(TEXTS), onnx_enc.encode(TEXTS)
    assert a.shape == b.shape == (len(TEXTS), 384)
    assert float(np.abs(a - b).max()) < 1e-5
    assert np.allclose(np.linalg.norm(b, axis=1), 1.0, atol=1e-5)
    # a second encoder reuses the cached export instead of exporting again
    mtime = exported[0].stat().st_mtime_ns
    again = MiniLMEncoder(cache_size=0, backend="onnx", onnx_cache_dir=tmp_path)
    assert exported[0].stat().st_mtime_ns == mtime
    assert float(np.abs(again.encode(TEXTS) - b).max()) == 0.0


def test_changed_onnx_cache_is_detected_and_exported_again(tmp_path: Path) -> None:
    torch_enc = MiniLMEncoder(cache_size=0, backend="torch")
    first = MiniLMEncoder(cache_size=0, backend="onnx", onnx_cache_dir=tmp_path)
    (path,) = tmp_path.glob("minilm-*-fused.onnx")
    record = sidecar(path)
    good = hashlib.sha256(path.read_bytes()).hexdigest()
    assert record.read_text().strip() == good == first.onnx_sha256

    # bit flips in the weights: caught by the sha256 recorded at export, exported again
    data = bytearray(path.read_bytes())
    for at in (0.3, 0.5, 0.7):
        data[int(len(data) * at)] ^= 0x10
    path.write_bytes(bytes(data))
    again = MiniLMEncoder(cache_size=0, backend="onnx", onnx_cache_dir=tmp_path)
    assert again.backend == "onnx"
    assert hashlib.sha256(path.read_bytes()).hexdigest() == record.read_text().strip()
    assert again.onnx_sha256 == record.read_text().strip()
    assert float(np.abs(again.encode(TEXTS) - torch_enc.encode(TEXTS)).max()) < 1e-5
