"""BatchConfig: validation in one sentence per mistake, JSON round trip."""

import pytest

from optiserve.errors import UserError
from serve.batch import BatchConfig


def _config(**changes):
    return BatchConfig(**{"repository": "repo", "model": "m", "inputs": ("data",), "output": "out", **changes})


def test_round_trip_and_device():
    config = _config(key_columns=["id"], input_map=[["input", "a,b"]], gpus_per_actor=0.5)
    assert BatchConfig.from_json(config.to_json()) == config
    assert config.device == "cuda" and _config().device == "cpu"


@pytest.mark.parametrize("changes, words", [
    ({"inputs": ()}, "--input"),
    ({"batch_size": 0}, "--batch-size"),
    ({"min_actors": 0}, "--min-actors"),
    ({"min_actors": 3, "max_actors": 2}, "--max-actors"),
    ({"threads_per_actor": 0}, "--threads-per-actor"),
    ({"gpus_per_actor": -1}, "--gpus-per-actor"),
    ({"nan": "drop"}, "--nan"),
    ({"max_rejects": -1}, "--max-rejects"),
    ({"input_map": (("input", "a"),), "feature_columns": ("a",)}, "only one"),
    ({"key_columns": ("a",), "feature_columns": ("a",)}, "both key and feature"),
])
def test_mistakes_are_one_sentence(changes, words):
    with pytest.raises(UserError, match=words) as info:
        _config(**changes)
    assert "\n" not in str(info.value)
