"""Example models trained on scikit-learn's bundled 8x8 digits: deterministic, seconds to build.

`build_examples(out)` writes, for each architecture, `OUT/<name>/model.pt` (TorchScript),
`model.pt2` (torch.export), `calibration.npz` and `eval.npz` (keys `inputs`, `labels`).
No download: the digits data ships inside scikit-learn.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

EXAMPLES = ("mlp", "cnn")
SEED = 0


class DigitsMLP(nn.Module):
    """A wide MLP: wide enough that the MatMuls, not per-op overhead, dominate inference time."""

    def __init__(self, hidden: int = 1024, features: int = 64) -> None:  # 64: the 8x8 digit images
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(features, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, 10)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class DigitsCNN(nn.Module):
    def __init__(self, channels: int = 32) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, channels, 3, padding=1), nn.BatchNorm2d(channels), nn.ReLU(),
            nn.Conv2d(channels, 2 * channels, 3, padding=1), nn.BatchNorm2d(2 * channels), nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(2 * channels * 16, 128), nn.ReLU(), nn.Linear(128, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


@dataclass(frozen=True)
class ExampleInfo:
    name: str
    input_shape: list[int]  # without the batch axis
    train_accuracy: float
    eval_accuracy: float
    epochs: int


def digits_split(seed: int = SEED) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Digits scaled to [0, 1], split 75/25 with a fixed seed: (x_train, y_train, x_eval, y_eval)."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = (digits.data / 16.0).astype(np.float32)
    y = digits.target.astype(np.int64)
    x_tr, x_ev, y_tr, y_ev = train_test_split(x, y, test_size=0.25, random_state=seed, stratify=y)
    return x_tr, y_tr, x_ev, y_ev


def _make(name: str) -> tuple[nn.Module, tuple[int, ...]]:
    if name == "mlp":
        return DigitsMLP(), (64,)
    if name == "cnn":
        return DigitsCNN(), (1, 8, 8)
    raise ValueError(f"unknown example {name!r}; choose from {', '.join(EXAMPLES)}")


def train(model: nn.Module, x: np.ndarray, y: np.ndarray, epochs: int, seed: int = SEED) -> nn.Module:
    """Plain Adam training, single-threaded and seeded so two builds give identical weights."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()
    for _ in range(epochs):
        for idx in torch.randperm(len(xt), generator=gen).split(64):
            opt.zero_grad()
            nn.functional.cross_entropy(model(xt[idx]), yt[idx]).backward()
            opt.step()
    return model.eval()


def accuracy(model: nn.Module, x: np.ndarray, y: np.ndarray) -> float:
    with torch.no_grad():
        return float((model(torch.from_numpy(x)).argmax(1).numpy() == y).mean())


def build_example(name: str, out: Path, epochs: int = 15) -> ExampleInfo:
    """Train one example model and write its TorchScript, torch.export and data files under OUT/<name>."""
    torch.manual_seed(SEED)
    model, shape = _make(name)
    x_tr, y_tr, x_ev, y_ev = digits_split()
    x_tr, x_ev = x_tr.reshape(-1, *shape), x_ev.reshape(-1, *shape)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # bit-for-bit repeatable reductions
    try:
        train(model, x_tr, y_tr, epochs)
    finally:
        torch.set_num_threads(threads)

    folder = out / name
    folder.mkdir(parents=True, exist_ok=True)
    example = torch.from_numpy(x_ev[:4])
    torch.jit.save(torch.jit.trace(model, example), folder / "model.pt")
    batch = torch.export.Dim("batch", min=1, max=4096)
    exported = torch.export.export(model, (example,), dynamic_shapes=({0: batch},))
    torch.export.save(exported, folder / "model.pt2")
    # Calibration comes from the training split (what a user would have), evaluation from held-out data.
    rng = np.random.default_rng(SEED)
    calib = rng.choice(len(x_tr), size=256, replace=False)
    np.savez(folder / "calibration.npz", inputs=x_tr[calib], labels=y_tr[calib])
    np.savez(folder / "eval.npz", inputs=x_ev, labels=y_ev)
    info = ExampleInfo(name, list(shape), accuracy(model, x_tr, y_tr), accuracy(model, x_ev, y_ev), epochs)
    (folder / "info.json").write_text(json.dumps(asdict(info), indent=2))
    return info


def build_examples(out: Path, names: tuple[str, ...] = EXAMPLES) -> list[ExampleInfo]:
    return [build_example(name, Path(out)) for name in names]
