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


@pytest.fixture(scope="session", autouse=True)
def _state_dir(tmp_path_factory):
    """Keep the suite's records (SQLite, cluster files) out of the user's ~/.optiserve. Session-scoped, so
    module-scoped fixtures (a shared Ray cluster) and the tests using them see the same state directory."""
    import os

    previous = os.environ.get("OPTISERVE_STATE_DIR")
    os.environ["OPTISERVE_STATE_DIR"] = str(tmp_path_factory.mktemp("state"))
    yield
    if previous is None:
        os.environ.pop("OPTISERVE_STATE_DIR", None)
    else:
        os.environ["OPTISERVE_STATE_DIR"] = previous
