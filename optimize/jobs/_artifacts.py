"""The job store: artifacts (model files, model folders, scripts) copied once and named by their sha256,
so a job's artifact cannot change after the job is created. Read-only after copying."""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path

from optiserve.errors import UserError
from optiserve.hashing import sha256_of


def store_artifact(source: Path, root: Path) -> tuple[Path, str]:
    """Copy `source` into root/<sha256>/<name> (once) and return (stored path, sha256)."""
    source = Path(source)
    if not source.exists():
        raise UserError(f"artifact {source} does not exist; give the path of a model file or folder")
    sha = sha256_of(source)
    target = Path(root) / sha / source.name
    if not target.exists():
        partial = target.with_name(target.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True) if partial.is_dir() else partial.unlink(missing_ok=True)
        partial.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, partial)
        else:
            shutil.copy2(source, partial)
        os.replace(partial, target)  # atomic: a crash never leaves a half-copied artifact under its final name
        for file in [target] if target.is_file() else target.rglob("*"):
            if file.is_file():
                file.chmod(file.stat().st_mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
    return target, sha
