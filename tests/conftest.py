"""Fixtures shared across the suite: the example models are trained once per test session."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def examples_dir(tmp_path_factory) -> Path:
    """OUT/{mlp,cnn}/{model.pt, model.pt2, calibration.npz, eval.npz} as `optimize example` writes them."""
    from optimize.examples import build_examples

    out = tmp_path_factory.mktemp("examples")
    build_examples(out)
    return out


@pytest.fixture(autouse=True)
def _state_dir(tmp_path, monkeypatch):
    """Keep every test's records (SQLite, cluster files) out of the user's ~/.optiserve."""
    monkeypatch.setenv("OPTISERVE_STATE_DIR", str(tmp_path / "state"))
