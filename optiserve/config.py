"""Config files into typed configs: one reader for every YAML (or JSON) settings file the project takes.

`read_mapping` reads a file that must hold a mapping and turns every way it can be wrong into one sentence;
`from_mapping` builds a dataclass from it, naming unknown keys and the known ones, with YAML lists turned into
the tuples the frozen configs use.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, TypeVar

from optiserve.errors import UserError

T = TypeVar("T")


def read_mapping(path: str | Path, what: str = "config file", example: str = "") -> dict[str, Any]:
    """The mapping in a YAML/JSON file (an empty file is an empty mapping). `what` names the file in messages
    ("grid file", "job spec", ...); `example` shows what a valid file looks like."""
    import yaml

    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())  # YAML is a superset of JSON
    except FileNotFoundError:
        raise UserError(f"{what} {path} does not exist.") from None
    except OSError as exc:
        raise UserError(f"cannot read {what} {path}: {exc.strerror}.") from None
    except yaml.YAMLError as exc:
        raise UserError(f"{what} {path} is not valid YAML/JSON ({str(exc).splitlines()[0]}).") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        hint = f", e.g. {example!r}" if example else ""
        raise UserError(f"{what} {path} must hold a mapping of settings{hint}, not {type(data).__name__}.")
    return data


def from_mapping(cls: type[T], data: dict[str, Any], what: str = "config", **overrides: Any) -> T:
    """`cls(**data, **overrides)` for a dataclass, refusing unknown keys by name; lists become tuples."""
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise UserError(f"{what} has unknown keys {unknown}; known keys: {', '.join(sorted(known))}.")
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
    return cls(**{**values, **overrides})
