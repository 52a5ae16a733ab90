"""The Dockerfile builds the one image every manifest names, and runs what the manifests ask of it.

No Docker engine here: the Dockerfile is parsed, and every command a rendered overlay runs
(container commands and exec probes) is checked against what the image holds: `python` from the
locked venv on PATH, and a module the image copies."""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.ops.manifests import ROOT, overlays, rendered, validate_module

DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def args(self, keyword: str) -> list[str]:
        return [a for k, a in self.instructions if k == keyword]


def parse_dockerfile(text: str) -> list[Stage]:
    joined = re.sub(r"\\\n", " ", text)
    stages: list[Stage] = []
    for raw in joined.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        keyword, _, rest = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            parts = rest.split()
            name = parts[2] if len(parts) >= 3 and parts[1].upper() == "AS" else None
            stages.append(Stage(parts[0], name))
        elif stages:
            stages[-1].instructions.append((keyword, rest.strip()))
    return stages


def exec_form(arg: str) -> list[str]:
    """CMD/ENTRYPOINT arguments in exec (JSON) form."""
    import json

    value = json.loads(arg)
    assert isinstance(value, list), arg
    return [str(v) for v in value]


@pytest.fixture(scope="module")
def stages() -> list[Stage]:
    return parse_dockerfile(DOCKERFILE.read_text())


def manifest_commands() -> list[tuple[str, list[str]]]:
    """(where, argv) for every container command and exec probe in every overlay."""
    out: list[tuple[str, list[str]]] = []
    v = validate_module()
    for overlay in overlays():
        for doc in rendered(overlay):
            pod = v.pod_spec(doc)
            if pod is None:
                continue
            for c in v.containers(pod):
                where = f"{overlay}/{doc['kind']}/{doc['metadata']['name']}"
                out.append((where, list(c.get("command") or []) + list(c.get("args") or [])))
                for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
                    command = ((c.get(probe) or {}).get("exec") or {}).get("command")
                    if command:
                        out.append((f"{where} {probe}", list(command)))
    return out


def test_the_image_is_multi_stage_non_root_and_built_from_the_lock(stages: list[Stage]) -> None:
    assert len(stages) >= 2, "not a multi-stage build"
    final = stages[-1]
    users = final.args("USER")
    assert users, "the final stage runs as root"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) != 0, f"USER {users[-1]} is not a numeric non-root uid"
    # The pods run as this uid (runAsNonRoot needs a numeric USER to verify it).
    hardening = (ROOT / "deploy/k8s/base/patches/pod-hardening.yaml").read_text()
    assert f"runAsUser: {uid}" in hardening

    runs = [a for s in stages for a in s.args("RUN")]
    syncs = [r for r in runs if "uv sync" in r]
    assert syncs and all("--frozen" in r for r in syncs), syncs
    assert any("uv.lock" in a for s in stages for a in s.args("COPY")), "uv.lock is not copied"
    # The runtime venv holds no dev or bench tools.
    runtime_venv = [s for s in stages if any("/opt/venv" in a for a in s.args("ENV"))]
    assert runtime_venv and not any(
        "--extra" in r for s in runtime_venv for r in s.args("RUN")
    ), "the runtime venv installs optional extras"


def test_every_command_the_manifests_run_exists_in_the_image(stages: list[Stage]) -> None:
    final = stages[-1]
    env = " ".join(final.args("ENV"))
    assert re.search(r"PATH=/opt/venv/bin:", env), "the locked venv's python is not first on PATH"
    workdir = final.args("WORKDIR")[-1]
    copied = {
        Path(shlex.split(a)[-2].rstrip("/")).name
        for a in final.args("COPY")
        if not a.startswith("--from")
    }
    assert final.args("ENTRYPOINT") == [], "an ENTRYPOINT would be prepended to the k8s commands"

    commands = manifest_commands()
    modules = set()
    for where, argv in commands:
        assert argv[:2] == ["python", "-m"], f"{where}: {argv} does not run `python -m <module>`"
        module = argv[2]
        package = module.split(".")[0]
        assert package in copied, f"{where}: {module} is in {package}/, which the image does not copy"
        path = ROOT.joinpath(*module.split("."))
        assert (path / "__main__.py").is_file() or path.with_suffix(".py").is_file(), (
            f"{where}: no module {module}"
        )
        modules.add(module)
    assert workdir == "/app" and "PYTHONPATH=/app" in env
    # The four kinds of process the image runs, as the manifests run them.
    assert {"gateway", "workflows", "zenthor.migrate"} <= modules
    assert sum(m.startswith("services.") for m in modules) == 7, sorted(modules)

    cmd = exec_form(final.args("CMD")[-1])
    assert any(cmd == argv for _, argv in commands), f"default CMD {cmd} is no manifest's command"


def test_the_build_context_leaves_local_state_out() -> None:
    ignored = {line.strip() for line in DOCKERIGNORE.read_text().splitlines()}
    assert {".venv", ".data", ".git", "zenthor/gen"} <= ignored
