"""The training command, run as documented, rebuilds the shipped prompt head.

Slow (a full nested cross-validation: 13 minutes measured on 2 shared cores), and the only test that
proves the committed artefact comes from the committed code and data. Scores are compared
with a small tolerance rather than bytes, so that a patch release of scikit-learn or numpy
that moves the last float bits does not fail it, while any real change of data, features,
training or calibration does.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from gateway.runtime import Models
from gateway.safety.normalize import normalise
from gateway.safety.prompt_head import PromptHead, default_head_path

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / "data" / "dev"


@pytest.mark.timeout(2400)
def test_training_command_rebuilds_the_shipped_head(tmp_path: Path, shared_models: Models) -> None:
    out = tmp_path / "prompt_head.npz"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "gateway.safety.train_prompt_head",
            "--data",
            str(DATA),
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=2300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    figures = json.loads(done.stdout)
    shipped, rebuilt = PromptHead.load(default_head_path()), PromptHead.load(out)
    assert rebuilt.categories == shipped.categories

    # the same cross-validated figures the card and the shipped artefact state
    cv, stated = figures["cv"], shipped.info["cv"]
    assert abs(cv["auroc_any_unsafe_max_score"] - stated["auroc_any_unsafe_max_score"]) < 0.005
    for cat, value in stated["auroc"].items():
        assert abs(cv["auroc"][cat] - value) < 0.005, cat
    for group, value in stated["classifier"]["flagged"].items():
        assert abs(cv["classifier"]["flagged"][group] - value) < 0.01, group
    for kind in ("blocked_categories", "reported_categories"):
        for figure in ("mean_categories", "precision"):
            value = stated["classifier"][kind][figure]
            assert abs(cv["classifier"][kind][figure] - value) < 0.02, (kind, figure)
    assert cv["share_floor"] == stated["share_floor"]
    assert cv["auroc_any_unsafe_max_score"] >= 0.84 and cv["obfuscation"]["overall"] >= 0.9

    # and the same scores on real prompts
    with (DATA / "i2p-dev.csv").open(newline="", encoding="utf-8") as fh:
        texts = [normalise(r["prompt"]).clean for r in csv.DictReader(fh)][:400]
    emb = shared_models.encoder.encode(texts)
    diff = np.abs(rebuilt.score(texts, emb) - shipped.score(texts, emb))
    # a rebuild on the same library versions is bit-identical; a fresh install takes the newest
    # numpy / scikit-learn / scipy releases, whose solvers move single scores by up to ~3e-3
    # (measured 2.9e-3 with scikit-learn 1.9.1, numpy 2.4.6, scipy 1.17.1)
    assert float(diff.max()) < 5e-3
