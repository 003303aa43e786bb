"""The packages' layers (docs/architecture.md): the base `optiserve` imports none of the others; optimize, serve
and autoscale stand on it side by side; serve may plug autoscale's policies into its deployments; loadtests may
use all of them. A new import across these lines fails here, so plumbing goes to the base instead."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("optiserve", "optimize", "serve", "autoscale", "loadtests")
ALLOWED = {
    "optiserve": set(),
    "optimize": {"optiserve"},
    "serve": {"optiserve", "autoscale"},
    "autoscale": {"optiserve"},
    "loadtests": {"optiserve", "optimize", "serve", "autoscale"},
}


def imported_packages(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        found |= {n.split(".")[0] for n in names} & set(PACKAGES)
    return found


@pytest.mark.parametrize("package", PACKAGES)
def test_package_imports_only_what_its_layer_allows(package):
    wrong = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        bad = imported_packages(path) - ALLOWED[package] - {package}
        if bad:
            wrong[str(path.relative_to(ROOT))] = sorted(bad)
    assert not wrong, f"{package} may import only {sorted(ALLOWED[package])}: {wrong}"


def test_the_rule_sees_an_import(tmp_path):
    module = tmp_path / "m.py"
    module.write_text("import os\nfrom serve.app import x\n\ndef f():\n    import autoscale.cost\n")
    assert imported_packages(module) == {"serve", "autoscale"}
