import pytest
import torch
from torch import nn


class ResidualCNN(nn.Module):
    """Conv + BatchNorm blocks joined by a residual add, global average pool, Linear head: the add couples the
    stem's and the block's output channels, which pruning must keep linked."""

    def __init__(self, width: int = 16) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU())
        self.block = nn.Sequential(nn.Conv2d(width, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
                                   nn.Conv2d(width, width, 3, padding=1), nn.BatchNorm2d(width))
        self.head = nn.Linear(width, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.stem(x)
        y = torch.relu(y + self.block(y))
        return self.head(y.mean((2, 3)))


@pytest.fixture
def residual_cnn() -> type[ResidualCNN]:
    """The class (call it with a width) of a small residual CNN with BatchNorm, for 8x8 one-channel inputs."""
    return ResidualCNN
