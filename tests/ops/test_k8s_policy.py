"""`make k8s-validate` passes on the manifests as they are, and fails on each kind of broken
manifest its policy checks exist for (network policy, probe independence, load balancing,
autoscaling). Each case copies deploy/k8s, breaks one thing and runs deploy/validate.py on it."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from tests.ops.manifests import ROOT, VALIDATE, kubectl, rendered, validate_module


def validate(*overlays: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(VALIDATE), "--kubectl", kubectl(), *map(str, overlays)],
        capture_output=True,
        text=True,
        timeout=300,
    )


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{path}: {old!r} not found (manifest changed: update this test)"
    path.write_text(text.replace(old, new, 1))


def drop_network_policies(k8s: Path) -> None:
    edit(k8s / "base/kustomization.yaml", "  - network-policies.yaml\n", "")


def open_grpc_to_everyone(k8s: Path) -> None:
    edit(
        k8s / "base/network-policies.yaml",
        "{key: app.kubernetes.io/component, operator: In, values: [gateway, worker, grpc-service]}\n      ports:",
        "{key: app.kubernetes.io/component, operator: In, values: [gateway, worker, grpc-service]}\n"
        "        - namespaceSelector: {}\n      ports:",
    )


def let_the_gateway_reach_postgres(k8s: Path) -> None:
    edit(k8s / "base/network-policies.yaml", "values: [grpc-service, migration]", "values: [grpc-service, migration, gateway]")


def worker_liveness_on_temporal(k8s: Path) -> None:
    edit(k8s / "base/worker.yaml", '["python", "-m", "workflows", "--alive"]', '["python", "-m", "workflows", "--check"]')


def cluster_ip_service(k8s: Path) -> None:
    edit(k8s / "base/services/messages.yaml", "  clusterIP: None\n", "")


def pick_first_address(k8s: Path) -> None:
    edit(k8s / "base/config.env", "ZENTHOR_DELIVERY_ADDR=dns:///delivery:50054", "ZENTHOR_DELIVERY_ADDR=delivery:50054")


def no_prod_hpa(k8s: Path) -> None:
    edit(k8s / "overlays/prod/kustomization.yaml", "  - hpa.yaml", "")


def gateway_without_scrape_annotation(k8s: Path) -> None:
    # The metrics patch reaches only the gRPC services: the gateway and the worker lose it.
    edit(
        k8s / "base/kustomization.yaml",
        "  - path: patches/metrics.yaml\n    target: {kind: Deployment}\n",
        "  - path: patches/metrics.yaml\n    target: {kind: Deployment, labelSelector: app.kubernetes.io/component=grpc-service}\n",
    )


def scrape_port_not_served(k8s: Path) -> None:
    edit(k8s / "base/patches/metrics.yaml", 'prometheus.io/port: "9464"', 'prometheus.io/port: "9100"')


def metrics_closed_to_the_scraper(k8s: Path) -> None:
    text = (k8s / "base/network-policies.yaml").read_text()
    start = text.index("---\n# The metrics port of every long-running pod")
    (k8s / "base/network-policies.yaml").write_text(text[:start])


def metrics_open_to_everyone(k8s: Path) -> None:
    edit(
        k8s / "base/network-policies.yaml",
        "        - namespaceSelector:\n            matchLabels: {kubernetes.io/metadata.name: monitoring}\n",
        "        - ipBlock: {cidr: 0.0.0.0/0}\n        - namespaceSelector:\n"
        "            matchLabels: {kubernetes.io/metadata.name: monitoring}\n",
    )


CASES: dict[str, tuple[Callable[[Path], None], str, str]] = {
    "no network policy": (drop_network_policies, "dev", "no default-deny NetworkPolicy"),
    "grpc open to any namespace": (open_grpc_to_everyone, "dev", "opens messages:50052 beyond"),
    "gateway reaches postgres": (let_the_gateway_reach_postgres, "dev", "reach Postgres"),
    "worker liveness on temporal": (worker_liveness_on_temporal, "dev", "checks a dependency"),
    "clusterip grpc service": (cluster_ip_service, "dev", "Service/messages is not headless"),
    "address without dns scheme": (pick_first_address, "dev", "ZENTHOR_DELIVERY_ADDR=delivery:50054"),
    "prod without hpa": (no_prod_hpa, "prod", "no HorizontalPodAutoscaler for: agent-queue"),
    "deployment without scrape annotation": (
        gateway_without_scrape_annotation, "dev", 'FAIL Deployment/gateway: pod template lacks annotation prometheus.io/scrape'
    ),
    "scrape port nobody serves": (scrape_port_not_served, "prod", "prometheus.io/port='9100' is not a container port named metrics"),
    "metrics closed to the scraper": (metrics_closed_to_the_scraper, "dev", "no NetworkPolicy lets a scraper reach worker:9464"),
    "metrics open to everyone": (metrics_open_to_everyone, "dev", "opens identity:9464 (metrics) to everyone"),
}


def test_the_manifests_as_they_are_pass() -> None:
    result = validate()
    assert result.returncode == 0, result.stdout + result.stderr
    assert " 0 failed" in result.stdout


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_broken_manifest_fails_validation(case: str, tmp_path: Path) -> None:
    breaker, overlay, expected = CASES[case]
    k8s = tmp_path / "k8s"
    shutil.copytree(ROOT / "deploy" / "k8s", k8s)
    breaker(k8s)
    result = validate(k8s / "overlays" / overlay)
    assert result.returncode == 1, result.stdout
    assert expected in result.stdout, result.stdout


def test_prod_autoscales_the_gateway_and_queue_heavy_services_and_fixes_no_replicas() -> None:
    docs = rendered("prod")
    hpa = {d["spec"]["scaleTargetRef"]["name"] for d in docs if d["kind"] == "HorizontalPodAutoscaler"}
    assert hpa == {"gateway", "agent-queue", "delivery", "messages"}
    for d in docs:
        if d["kind"] == "Deployment" and d["metadata"]["name"] in hpa:
            assert "replicas" not in d["spec"], f"{d['metadata']['name']}: replicas fights the HPA"


def test_the_migration_job_sets_every_role_password_from_the_secret() -> None:
    from zenthor.config import ServiceName
    from zenthor.provision import password_env

    for overlay in ("dev", "prod"):
        job = next(d for d in rendered(overlay) if d["kind"] == "Job")
        env = {e["name"]: e for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}
        for service in ServiceName:
            ref = env[password_env(service)]["valueFrom"]["secretKeyRef"]
            assert ref["name"] == "zenthor-secrets", ref


def test_the_readme_urls_use_the_driver_the_code_uses() -> None:
    text = (ROOT / "deploy/k8s/README.md").read_text()
    assert "postgresql+asyncpg" not in text
    assert "postgresql+psycopg://" in text


def test_every_deployment_is_scraped_on_the_port_its_processes_serve() -> None:
    for overlay in ("dev", "prod"):
        docs = rendered(overlay)
        config = next(d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"].startswith("zenthor-config"))
        for d in docs:
            if d["kind"] != "Deployment":
                continue
            annotations = d["spec"]["template"]["metadata"]["annotations"]
            assert annotations["prometheus.io/scrape"] == "true", d["metadata"]["name"]
            assert annotations["prometheus.io/port"] == config["data"]["ZENTHOR_METRICS_PORT"]
            [app] = d["spec"]["template"]["spec"]["containers"]
            assert {"name": "metrics", "containerPort": 9464} in app["ports"]


def test_the_monitoring_objects_select_the_pods_and_port_the_manifests_declare() -> None:
    monitor = yaml.safe_load((ROOT / "deploy/k8s/monitoring/pod-monitor.yaml").read_text())
    [endpoint] = monitor["spec"]["podMetricsEndpoints"]
    assert (endpoint["port"], endpoint["path"]) == ("metrics", "/metrics")
    [job] = yaml.safe_load((ROOT / "deploy/k8s/monitoring/prometheus-scrape.yaml").read_text())
    kept = [r for r in job["relabel_configs"] if r.get("action") == "keep"]
    assert {r["source_labels"][0] for r in kept} == {
        "__meta_kubernetes_pod_label_app_kubernetes_io_part_of",
        "__meta_kubernetes_pod_annotation_prometheus_io_scrape",
    }
    selects = validate_module().selects
    for d in rendered("prod"):
        if d["kind"] == "Deployment":
            labels = d["spec"]["template"]["metadata"]["labels"]
            assert selects(monitor["spec"]["selector"], labels), d["metadata"]["name"]
