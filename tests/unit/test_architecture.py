"""Services import ``shared``, never one another; every service package has the same shape."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SERVICES = sorted(p.name for p in (ROOT / "services").iterdir() if p.is_dir() and not p.name.startswith("_"))
SHAPE = ("main.py", "config.py", "api.py", "deps.py", "models.py", "service.py", "events.py", "errors.py")


def imported_modules(path: Path) -> set[str]:
    modules: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            modules.add(node.module)
    return modules


def test_all_services_present() -> None:
    assert SERVICES == ["auth", "credits", "gateway", "renders", "telemetry", "webhooks"]


@pytest.mark.parametrize("service", SERVICES)
def test_service_imports_no_other_service(service: str) -> None:
    offenders = []
    for path in (ROOT / "services" / service).rglob("*.py"):
        for module in imported_modules(path):
            parts = module.split(".")
            if parts[0] == "services" and len(parts) > 1 and parts[1] != service:
                offenders.append(f"{path.relative_to(ROOT)} imports {module}")
    assert offenders == []


def test_shared_imports_no_service_outside_devstack_and_migrations() -> None:
    """``shared`` is below the services; only the process launcher and migration runner name them."""
    allowed = {"devstack", "migrations.py", "testing"}
    offenders = []
    for path in (ROOT / "shared").rglob("*.py"):
        rel = path.relative_to(ROOT / "shared")
        if rel.parts[0] in allowed:
            continue
        offenders += [f"{rel} imports {m}" for m in imported_modules(path) if m.startswith("services")]
    assert offenders == []


@pytest.mark.parametrize("service", SERVICES)
def test_service_has_the_common_shape(service: str) -> None:
    missing = [name for name in SHAPE if not (ROOT / "services" / service / name).is_file()]
    assert missing == []
