"""Private working folders, so concurrent builds (Ray tasks, parallel jobs, two users of one folder) never share
a file.

onnxruntime's quantizers write scratch files next to their input (`<model>-inferred.onnx`) and delete them
afterwards: two builds from one input race on that name. Every build therefore works on its own link to the
input inside its own folder, and every command stages its outputs in a private folder that replaces the
published ones entry by entry only when the command succeeded (a failed run leaves the previous results).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def private_dir(parent: Path, prefix: str = ".work-") -> Iterator[Path]:
    """A fresh folder under `parent`, removed on exit whatever happens."""
    Path(parent).mkdir(parents=True, exist_ok=True)
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def build_privately(src: Path, out: Path, build: Callable[[Path, Path], object]) -> Path:
    """Run `build(private_src, private_out)` on a private link to `src`, then move the result to `out`."""
    out = Path(out)
    with private_dir(out.parent, f".{out.stem}-") as work:
        private_src = work / Path(src).name
        try:
            os.link(src, private_src)  # same bytes, private name: scratch files derived from it are private too
        except OSError:
            shutil.copyfile(src, private_src)
        private_out = work / f"out-{out.name}"
        build(private_src, private_out)
        os.replace(private_out, out)
    return out


@contextmanager
def staged(out: Path) -> Iterator[Path]:
    """A private folder to build a command's outputs in; on success each top-level entry replaces its namesake in
    `out` (files atomically, folders by rename), on failure nothing in `out` changes."""
    out = Path(out)
    with private_dir(out, ".build-") as stage:
        yield stage
        for entry in sorted(stage.iterdir()):
            target = out / entry.name
            if entry.is_dir() and target.is_dir():
                old = stage / f".replaced-{entry.name}"
                target.rename(old)  # the stale folder is dropped with the stage
            entry.replace(target)
