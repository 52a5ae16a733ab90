"""Every command in the README's shell blocks works as written: the ones that need no stack are
run here (`make` targets dry-run, `--help`), and the one block that needs `make dev` running —
the curl session — is run by tests/e2e/test_runtime_demo.py against a stack started as `make dev`
starts it. A command neither covers fails here."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from tests.support import readme

ROOT = Path(__file__).resolve().parents[2]
VENV_PYTHON = ".venv/bin/python"


def run(command: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_every_readme_command_outside_the_session_runs_as_written() -> None:
    session = readme.session_block()
    checked = []
    for block in readme.shell_blocks():
        if block == session:
            continue  # needs a running stack: tests/e2e/test_runtime_demo.py runs it
        for command in readme.commands(block):
            make = re.fullmatch(r"make ([a-z-]+)", command)
            if make:
                # A dry run: the target exists and its recipe expands (`make test` itself is this suite).
                result = run(["make", "-n", make.group(1)])
            elif command.startswith(f"{VENV_PYTHON} -m ") and command.endswith(" --help"):
                result = run([sys.executable, *command.split()[1:]])
            else:
                raise AssertionError(f"README command no test runs: {command!r}")
            assert result.returncode == 0, f"{command}: {result.stdout}{result.stderr}"
            checked.append(command)
    assert "make dev" in checked


def test_the_devstack_help_the_readme_points_to_works_as_written() -> None:
    text = readme.README.read_text()
    assert "`.venv/bin/python -m zenthor.devstack --help`" in text
    result = run([str(ROOT / VENV_PYTHON), "-m", "zenthor.devstack", "--help"])
    assert result.returncode == 0, result.stderr
    for shown in ("--port-offset", "--issuer-port", "token", "ask-approval"):
        assert shown in result.stdout
    token_help = run([str(ROOT / VENV_PYTHON), "-m", "zenthor.devstack", "token", "--help"])
    assert token_help.returncode == 0 and "--admin" in token_help.stdout


def test_the_session_uses_only_routes_the_gateway_serves() -> None:
    from gateway.http_rules import contract_services, http_bindings

    templates = {(b.verb.value, re.sub(r"\{\w+\}", "[^/:]+", b.template)) for b in http_bindings(contract_services())}
    for command in readme.commands(readme.session_block()):
        for url in re.findall(r'"\$GW(/v1/[^"?]*)', command):
            verb = re.search(r"-X (\w+)", command)
            path = re.sub(r"\$\w+", "id_1", url)
            method = verb.group(1) if verb else "GET"
            assert any(m == method and re.fullmatch(t, path) for m, t in templates), f"{method} {url}"
