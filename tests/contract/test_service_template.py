"""Every service has the one shape docs/architecture.md §2 writes down: the same file names
for the same roles, and nothing else, so a reader who learned one service can read them all."""

from __future__ import annotations

from pathlib import Path

import pytest

from zenthor.config import ServiceName

ROOT = Path(__file__).resolve().parents[2]
SERVICES_DIR = ROOT / "services"

# Role files every service has (docs/architecture.md §2).
REQUIRED_FILES = {"__init__.py", "__main__.py", "app.py", "servicer.py", "wire.py"}
# Packages every service has, and the modules each of them always holds.
REQUIRED_PACKAGES = {
    "usecases": {"__init__.py", "deps.py"},
    "domain": {"__init__.py"},
    "store": {"__init__.py", "tables.py"},
    "migrations": {"env.py", "versions"},
}
# Only services that call others have it.
OPTIONAL_FILES = {"peers.py"}

# A service whose issue has not landed is only its contract: every RPC answers UNIMPLEMENTED.
# It keeps the entry points (package, `python -m`, composition root, servicer) and nothing
# that would pretend to be built; test_contract_only_services_implement_nothing keeps this
# exemption from outliving the build. Every service is built today.
CONTRACT_ONLY: set[str] = set()
CONTRACT_ONLY_FILES = {"__init__.py", "__main__.py", "app.py", "servicer.py"}


def _entries(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir() if p.name != "__pycache__"}


def test_the_services_folder_holds_exactly_the_seven_services() -> None:
    assert _entries(SERVICES_DIR) - {"__init__.py"} == {s.value for s in ServiceName}


@pytest.mark.parametrize("service", sorted(s.value for s in ServiceName if s.value not in CONTRACT_ONLY))
def test_service_follows_the_template(service: str) -> None:
    folder = SERVICES_DIR / service
    entries = _entries(folder)
    expected = REQUIRED_FILES | set(REQUIRED_PACKAGES)
    assert expected <= entries, f"services/{service} lacks {sorted(expected - entries)}"
    extra = entries - expected - OPTIONAL_FILES
    assert not extra, f"services/{service} has files outside the template: {sorted(extra)}"
    for package, modules in REQUIRED_PACKAGES.items():
        assert (folder / package).is_dir(), f"services/{service}/{package} must be a package folder"
        present = _entries(folder / package)
        assert modules <= present, f"services/{service}/{package} lacks {sorted(modules - present)}"
        nested = {p.name for p in (folder / package).iterdir() if p.is_dir() and p.name not in {"__pycache__", "versions"}}
        assert not nested, f"services/{service}/{package} nests packages: {sorted(nested)}"


def test_contract_only_services_hold_only_their_entry_points() -> None:
    for service in sorted(CONTRACT_ONLY):
        assert _entries(SERVICES_DIR / service) == CONTRACT_ONLY_FILES


def test_contract_only_services_implement_nothing() -> None:
    import importlib

    for service in sorted(CONTRACT_ONLY):
        module = importlib.import_module(f"services.{service}.servicer")
        name = ServiceName(service).proto_service
        servicer = getattr(module, name.removesuffix("Service") + "Servicer")
        own = {k for k, v in vars(servicer).items() if callable(v) and not k.startswith("_")}
        assert not own, f"{service} implements {sorted(own)}: give it the full template and drop it from CONTRACT_ONLY"
