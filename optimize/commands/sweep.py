"""`optimize sweep MODEL` (placeholder until the sweep lands)."""

from __future__ import annotations


def register(subparsers) -> None:
    pass
