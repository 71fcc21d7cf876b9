"""The apps depend one way: `matching` (faces) builds on `gallery` (events, photos,
uploads, queueing), never the reverse. gallery names matching's jobs only by their
dotted path in gallery/jobs.py, the one narrow entry point. Face engines never
query the database: they are given ids and answer about images."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from django.utils.module_loading import import_string

ROOT = Path(__file__).resolve().parent.parent


def _imported_modules(path: Path) -> set[str]:
    modules: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            modules.add(node.module)
    return modules


@pytest.mark.parametrize("path", sorted((ROOT / "gallery").rglob("*.py")), ids=lambda p: str(p.relative_to(ROOT)))
def test_gallery_never_imports_matching(path):
    forbidden = {m for m in _imported_modules(path) if m == "matching" or m.startswith("matching.")}
    assert not forbidden, f"{path.relative_to(ROOT)} imports {sorted(forbidden)}: gallery must not depend on matching"


def test_the_forbidden_import_check_can_fail(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("from matching.services import photo_index\nimport matching.index\n")
    assert _imported_modules(bad) >= {"matching.services", "matching.index"}


def test_every_job_gallery_queues_exists():
    """The dotted task paths in gallery/jobs.py are the only link to matching: each must resolve."""
    source = (ROOT / "gallery" / "jobs.py").read_text()
    paths = {
        node.value
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.startswith("matching.tasks.")
    }
    assert paths
    for dotted in paths:
        assert callable(import_string(dotted)), dotted


@pytest.mark.parametrize(
    "path", sorted((ROOT / "matching" / "engines").glob("*.py")), ids=lambda p: str(p.relative_to(ROOT))
)
def test_face_engines_never_query_the_database(path):
    """Engines answer about images, given ids; matching.services and matching.index own the queries."""
    forbidden = {
        m
        for m in _imported_modules(path)
        if m.split(".")[0] == "gallery" or m.startswith("django.db") or m in {"matching.services", "matching.index"}
    }
    assert not forbidden, f"{path.relative_to(ROOT)} imports {sorted(forbidden)}: engines must not query the database"
