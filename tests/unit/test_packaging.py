"""docker-compose.yml cannot run in CI (no Docker engine); check what can be checked without it."""

from __future__ import annotations

import copy
import subprocess
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from cxstream.cli import main
from cxstream.settings import load_settings

ROOT = Path(__file__).parents[2]


def compose():
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_compose_services_dependencies_and_mounted_files_exist():
    spec = compose()
    services = spec["services"]
    assert {"redpanda", "redis", "cxstream", "prometheus", "grafana"} <= set(services)
    for name, service in services.items():
        for dep in service.get("depends_on", {}):
            assert dep in services, f"{name} depends on unknown service {dep}"
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (ROOT / source).exists(), f"{name} mounts missing {source}"
            else:
                assert source in spec.get("volumes", {}), f"{name} uses undeclared volume {source}"
        if service.get("build"):
            assert (ROOT / service["build"] / "Dockerfile").exists()


def test_compose_app_commands_are_valid_cli_invocations():
    for name, service in compose()["services"].items():
        if not service.get("build"):
            continue
        command = service["command"]
        result = CliRunner().invoke(main, [command[0], "--help"])
        assert result.exit_code == 0, f"{name}: unknown command {command[0]}"
        options = [arg for arg in command[1:] if arg.startswith("--")]
        for option in options:
            assert option in result.output, f"{name}: {command[0]} has no option {option}"


def test_compose_environment_is_accepted_by_the_settings(monkeypatch):
    env = compose()["x-cxstream-env"]
    for key, value in env.items():
        if not value.startswith("${"):
            monkeypatch.setenv(key, value)
    settings = load_settings(ROOT / "config" / "cxstream.yaml")
    assert settings.kafka.brokers == ["redpanda:9092"]
    assert settings.redis.url.get_secret_value() == "redis://redis:6379/0"


def test_prometheus_scrapes_the_flow_metrics_port():
    prom = yaml.safe_load((ROOT / "config" / "prometheus.yml").read_text())
    targets = prom["scrape_configs"][0]["static_configs"][0]["targets"]
    port = load_settings(ROOT / "config" / "cxstream.yaml").flow.metrics_port
    assert targets == [f"cxstream:{port}"]


def test_grafana_dashboard_queries_only_metrics_that_exist():
    import json
    import re

    from prometheus_client import REGISTRY

    import cxstream.metrics  # noqa: F401 - registers the metrics

    known = set()
    for family in REGISTRY.collect():
        known.add(family.name)
        if family.type == "counter":
            known.add(family.name + "_total")
        if family.type == "histogram":
            known.add(family.name + "_bucket")
        known.update(s.name for s in family.samples)
    dashboard = json.loads(
        (ROOT / "config" / "grafana" / "dashboards" / "cxstream.json").read_text()
    )
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    used = {m for e in exprs for m in re.findall(r"\b(cxstream_[a-z_]+)", e)}
    assert used, "the dashboard queries no cxstream metric"
    assert used <= known, used - known
    provisioning = ROOT / "config" / "grafana" / "provisioning" / "dashboards" / "cxstream.yml"
    assert "/var/lib/grafana/dashboards" in provisioning.read_text()


def test_kubernetes_manifests_are_consistent_and_their_config_validates(tmp_path):
    from cxstream.actions.rules import load_policy

    docs = {
        d["kind"]: d for d in yaml.safe_load_all((ROOT / "deploy/k8s/cxstream.yaml").read_text())
    }
    assert set(docs) == {
        "ConfigMap",
        "Service",
        "PersistentVolumeClaim",
        "StatefulSet",
        "NetworkPolicy",
    }
    docs["Service"] = manifests()["Service/cxstream"]
    data = docs["ConfigMap"]["data"]
    (tmp_path / "cxstream.yaml").write_text(data["cxstream.yaml"])
    (tmp_path / "policy.yaml").write_text(data["policy.yaml"])
    settings = load_settings(tmp_path / "cxstream.yaml")
    load_policy(tmp_path / "policy.yaml")
    spec = docs["StatefulSet"]["spec"]
    container = spec["template"]["spec"]["containers"][0]
    env = {e["name"]: e for e in container["env"]}
    assert int(env["CX_REPLICAS"]["value"]) == spec["replicas"]
    assert settings.flow.recovery_partitions >= spec["replicas"]
    assert settings.kafka.topics.partitions >= 2 * spec["replicas"]
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert settings.flow.recovery_dir in mounts
    assert spec["serviceName"] == docs["Service"]["metadata"]["name"]
    assert "cxstream run --config /etc/cxstream/cxstream.yaml -i" in container["args"][0]
    # every pod serves metrics where the probe, the port and the scrape annotation look
    assert settings.flow.metrics_port_per_process is False
    assert settings.flow.metrics_host == "0.0.0.0"  # noqa: S104 - scraped from other pods
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    annotations = spec["template"]["metadata"]["annotations"]
    assert ports["metrics"] == settings.flow.metrics_port == int(annotations["prometheus.io/port"])
    assert container["readinessProbe"]["httpGet"]["port"] == "metrics"
    # the cluster's addresses resolve before any pod is Ready (it is Ready once the cluster formed)
    assert docs["Service"]["spec"]["publishNotReadyAddresses"] is True


def manifests() -> dict[str, dict]:
    """The Kubernetes manifests by ``kind/name``."""
    docs = yaml.safe_load_all((ROOT / "deploy/k8s/cxstream.yaml").read_text())
    return {f"{d['kind']}/{d['metadata']['name']}": d for d in docs}


@pytest.mark.parametrize("replicas", [1, 3])
def test_kubernetes_cluster_forms_for_any_size_and_every_probe_finds_its_process(
    replicas, tmp_path
):
    import kubernetes_validate

    docs = manifests()
    stateful = copy.deepcopy(docs["StatefulSet/cxstream"])
    stateful["spec"]["replicas"] = replicas
    container = stateful["spec"]["template"]["spec"]["containers"][0]
    for e in container["env"]:
        if e["name"] == "CX_REPLICAS":
            e["value"] = str(replicas)
    rendered = [*(d for k, d in docs.items() if k != "StatefulSet/cxstream"), stateful]
    version = kubernetes_validate.latest_version()
    for doc in rendered:  # the API server's own schemas, unknown fields refused
        kubernetes_validate.validate(doc, version, strict=True)

    (tmp_path / "cxstream.yaml").write_text(
        docs["ConfigMap/cxstream-config"]["data"]["cxstream.yaml"]
    )
    settings = load_settings(tmp_path / "cxstream.yaml")
    headless = docs["Service/cxstream"]
    name, service = stateful["metadata"]["name"], headless["metadata"]["name"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    probe_port = container["readinessProbe"]["httpGet"]["port"]
    scraped = int(stateful["spec"]["template"]["metadata"]["annotations"]["prometheus.io/port"])
    # what each pod's shell line would run, with `exec cxstream run` replaced by printing argv
    script = container["args"][0].replace("exec cxstream run", "printf '%s\\n'")
    for ordinal in range(replicas):
        out = subprocess.run(
            ["sh", "-c", script],
            env={
                "HOSTNAME": f"{name}-{ordinal}",
                "CX_REPLICAS": str(replicas),
                "PATH": "/usr/bin:/bin",
            },
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split("\n")
        argv = dict(zip(out[::2], out[1::2], strict=False))
        process_id = int(argv["-i"])
        assert process_id == ordinal
        addresses = argv["-a"].split(";")
        assert addresses == [f"{name}-{n}.{service}:{ports['cluster']}" for n in range(replicas)]
        # the port this process serves its metrics on, as `cxstream run -i` computes it
        f = settings.flow
        served = f.metrics_port + (process_id if f.metrics_port_per_process else 0)
        assert ports[probe_port] == served == scraped
    # the cluster addresses resolve before the pods are Ready (Ready once the cluster formed)
    assert headless["spec"]["clusterIP"] == "None"
    assert headless["spec"]["publishNotReadyAddresses"] is True
    # the dashboard is served by process 0 only, and its Service selects that pod only
    dashboard = docs["Service/cxstream-dashboard"]["spec"]
    assert dashboard["selector"]["statefulset.kubernetes.io/pod-name"] == f"{name}-0"
    assert dashboard["ports"][0]["targetPort"] in ports


def dockerfile() -> list[str]:
    """The Dockerfile's instructions, continuation lines joined, comments dropped."""
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    return [line.strip() for line in text.splitlines() if line.strip() and line[0] != "#"]


def test_the_image_runs_unprivileged_and_owns_what_its_commands_write(tmp_path):
    steps = dockerfile()
    users = [line.split()[1] for line in steps if line.startswith("USER ")]
    assert users, "the image runs as root"
    uid, _, gid = users[-1].partition(":")
    # numeric, so that Kubernetes' runAsNonRoot can check it without reading /etc/passwd
    assert uid.isdigit() and int(uid) != 0 and gid.isdigit()
    owned = " ".join(line for line in steps if "chown" in line)
    assert f"chown -R {uid}:{gid}" in owned
    # docker-compose: every volume a service of the image writes is a directory the user owns
    for name, service in compose()["services"].items():
        if service.get("build"):
            for volume in service.get("volumes", []):
                target = volume.split(":")[1]
                assert target in owned.split(), f"{name} writes {target}, owned by root"
    # Kubernetes: the pod runs as that user, its volumes are made its group's, and the root
    # filesystem is read-only: every path the flow writes is a volume
    pod = manifests()["StatefulSet/cxstream"]["spec"]["template"]["spec"]
    security = pod["securityContext"]
    assert security["runAsNonRoot"] is True
    assert (security["runAsUser"], security["fsGroup"]) == (int(uid), int(gid))
    (container,) = pod["containers"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    (tmp_path / "cxstream.yaml").write_text(
        manifests()["ConfigMap/cxstream-config"]["data"]["cxstream.yaml"]
    )
    recovery = load_settings(tmp_path / "cxstream.yaml").flow.recovery_dir
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert {recovery, "/tmp"} <= mounts  # noqa: S108 - the pod's own emptyDir
    assert recovery.startswith("/var/lib/cxstream/")  # owned in the image too (docker run -v)


def _admits(rule: dict, port: str) -> bool:
    return any(p["port"] == port for p in rule.get("ports", []))


def test_kubernetes_network_policy_admits_each_port_only_from_whom_it_serves():
    docs = manifests()
    policy = docs["NetworkPolicy/cxstream"]["spec"]
    pod = docs["StatefulSet/cxstream"]["spec"]["template"]
    labels = pod["metadata"]["labels"]
    assert policy["podSelector"]["matchLabels"].items() <= labels.items()
    assert policy["policyTypes"] == ["Ingress"]
    rules = policy["ingress"]
    ports = [p["name"] for p in pod["spec"]["containers"][0]["ports"]]
    # every port the pod serves is admitted by exactly one rule: none is shut by accident
    for port in ports:
        assert sum(_admits(rule, port) for rule in rules) == 1, port
    assert {p["port"] for rule in rules for p in rule["ports"]} <= set(ports)
    # the Bytewax processes' own, unauthenticated traffic: from the other cxstream pods only
    (cluster,) = [rule for rule in rules if _admits(rule, "cluster")]
    assert cluster["from"] == [{"podSelector": {"matchLabels": labels}}]
    (metrics,) = [rule for rule in rules if _admits(rule, "metrics")]
    assert metrics["from"], "metrics open to every pod"
    # ... and to the other cxstream pods: process 0's dashboard reads their figures
    assert {"podSelector": {"matchLabels": labels}} in metrics["from"]


def test_prometheus_operator_resources_scrape_the_pods_and_carry_the_alerting_rules():
    from cxstream.devtools.k8s import JOB, monitoring_manifests

    rules = ROOT / "config" / "prometheus-alerts.yml"
    written = list(yaml.safe_load_all((ROOT / "deploy/k8s/monitoring.yaml").read_text()))
    assert written == monitoring_manifests(rules), "run `make k8s-monitoring`"
    pod_monitor, rule = written
    assert rule["spec"]["groups"] == yaml.safe_load(rules.read_text())["groups"]
    assert pod_monitor["metadata"]["labels"] == rule["metadata"]["labels"]
    # the PodMonitor finds the StatefulSet's pods and their metrics port ...
    pod = manifests()["StatefulSet/cxstream"]["spec"]["template"]
    labels = pod["metadata"]["labels"]
    spec = pod_monitor["spec"]
    assert spec["selector"]["matchLabels"].items() <= labels.items()
    (endpoint,) = spec["podMetricsEndpoints"]
    ports = {p["name"] for p in pod["spec"]["containers"][0]["ports"]}
    assert endpoint["port"] in ports
    assert endpoint["path"] == "/metrics"
    # ... and names the job by a pod label whose value is the job the rules ask for (without
    # jobLabel it would be "<namespace>/cxstream", and CxstreamDown would never match)
    assert labels[spec["jobLabel"]] == JOB
    prom = yaml.safe_load((ROOT / "config" / "prometheus.yml").read_text())
    assert prom["scrape_configs"][0]["job_name"] == JOB
    assert f'up{{job="{JOB}"}}' in rules.read_text()
