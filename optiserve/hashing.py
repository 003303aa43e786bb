"""sha256 of what users hand over: a file's bytes, or a folder's files (relative path and bytes, sorted)."""

from __future__ import annotations

import hashlib
from pathlib import Path

_BLOCK = 1 << 20


def sha256_file(path: Path) -> str:
    return sha256_of(Path(path))


def sha256_of(path: Path, suffixes: tuple[str, ...] | None = None) -> str:
    """Of a file's bytes; of a folder, of its files' relative paths and bytes in sorted order (only the files
    ending in `suffixes` when given, e.g. a model folder's weights and configs without caches)."""
    path = Path(path)
    digest = hashlib.sha256()
    if path.is_file():
        files = [path]
    else:
        files = sorted(p for p in path.rglob("*") if p.is_file() and (suffixes is None or p.suffix in suffixes))
    for file in files:
        if path.is_dir():
            digest.update(str(file.relative_to(path)).encode() + b"\0")
        with open(file, "rb") as f:
            for block in iter(lambda f=f: f.read(_BLOCK), b""):
                digest.update(block)
    return digest.hexdigest()
