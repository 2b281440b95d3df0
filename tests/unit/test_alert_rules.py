"""The Prometheus alerting rules (config/prometheus-alerts.yml): valid for Prometheus itself,
each alert shown to fire and to stay quiet (promtool's rule unit tests), written only against
metrics and label values cxstream exports, loaded by the shipped Prometheus configuration, and
documented; and the Grafana dashboard's queries, PromQL that Prometheus parses."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "config" / "prometheus-alerts.yml"
SCENARIOS = Path(__file__).parent / "prometheus" / "alerts_test.yml"


def _rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load(RULES.read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


def _tool(name: str, package: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is missing: `bash .ci/prereqs` installs Debian's {package} package")
    return path


def _promtool() -> str:
    return _tool("promtool", "prometheus")


def _amtool() -> str:
    return _tool("amtool", "prometheus-alertmanager")


def _run(*args: str, cwd: Path = ROOT) -> None:
    done = subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


def test_prometheus_accepts_the_rules_and_the_configuration_that_loads_them():
    promtool = _promtool()
    _run(promtool, "check", "rules", str(RULES))
    _run(promtool, "check", "config", str(ROOT / "config" / "prometheus.yml"))
    prom = yaml.safe_load((ROOT / "config" / "prometheus.yml").read_text())
    assert prom["rule_files"] == [RULES.name]
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    mounts = compose["services"]["prometheus"]["volumes"]
    assert f"./config/{RULES.name}:/etc/prometheus/{RULES.name}:ro" in mounts


def test_alertmanager_accepts_its_configuration_and_prometheus_sends_it_the_alerts():
    amtool = _amtool()
    config = ROOT / "config" / "alertmanager.yml"
    _run(amtool, "check-config", str(config))
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    service = compose["services"]["alertmanager"]
    assert f"./config/{config.name}:/etc/alertmanager/alertmanager.yml:ro" in service["volumes"]
    (port,) = [p.split(":")[-1] for p in service["ports"]]
    prom = yaml.safe_load((ROOT / "config" / "prometheus.yml").read_text())
    targets = [
        target
        for manager in prom["alerting"]["alertmanagers"]
        for static in manager["static_configs"]
        for target in static["targets"]
    ]
    assert targets == [f"alertmanager:{port}"]
    assert "alertmanager" in compose["services"]["prometheus"]["depends_on"]
    # every alert of either severity reaches the receiver
    for rule in _rules():
        _run(
            amtool,
            "config",
            "routes",
            "test",
            f"--config.file={config}",
            "--verify.receivers=operations",
            f"alertname={rule['alert']}",
            f"severity={rule['labels']['severity']}",
        )
    # the inhibition names alerts that exist
    names = {rule["alert"] for rule in _rules()}
    for inhibit in yaml.safe_load(config.read_text())["inhibit_rules"]:
        for side in ("source_matchers", "target_matchers"):
            for label, op, value in (_MATCHER.findall(m)[0] for m in inhibit[side]):
                assert label == "alertname"
                if op == "=~":
                    assert any(re.fullmatch(value, name) for name in names), value
                else:
                    assert value in names, value


def test_each_alert_fires_and_stays_quiet_as_its_scenarios_expect(tmp_path):
    # promtool compares annotations word for word; the scenarios check when and with which
    # labels each alert fires, so they run against the rules without their annotations
    promtool = _promtool()
    doc = yaml.safe_load(RULES.read_text())
    for group in doc["groups"]:
        for rule in group["rules"]:
            rule.pop("annotations", None)
    (tmp_path / "rules.yml").write_text(yaml.safe_dump(doc))
    scenarios = yaml.safe_load(SCENARIOS.read_text())
    scenarios["rule_files"] = ["rules.yml"]
    (tmp_path / "scenarios.yml").write_text(yaml.safe_dump(scenarios))
    _run(promtool, "test", "rules", "scenarios.yml", cwd=tmp_path)


def test_every_alert_has_a_scenario_where_it_fires_and_one_where_it_does_not():
    checks = [
        check
        for test in yaml.safe_load(SCENARIOS.read_text())["tests"]
        for check in test["alert_rule_test"]
    ]
    for rule in _rules():
        name = rule["alert"]
        mine = [c for c in checks if c["alertname"] == name]
        assert any(c["exp_alerts"] for c in mine), f"{name} is never shown to fire"
        assert any(not c["exp_alerts"] for c in mine), f"{name} is never shown to stay quiet"


def _exported() -> tuple[dict[str, set[str]], dict[tuple[str, str], set[str]]]:
    """Every series name cxstream exports with its label names, and the label values it
    initialises (a labelled metric exports its known combinations at 0 from the start)."""
    from prometheus_client import REGISTRY
    from prometheus_client.metrics import MetricWrapperBase

    import cxstream.metrics as metrics

    labels: dict[str, set[str]] = {}
    for obj in vars(metrics).values():
        if isinstance(obj, MetricWrapperBase):
            names = set(obj._labelnames)
            if obj._type == "stateset":  # an Enum: its one label is its own name
                names = {obj._name}
            labels[obj._name] = names
    series: dict[str, set[str]] = {}
    values: dict[tuple[str, str], set[str]] = {}
    for family in REGISTRY.collect():
        if family.name not in labels:
            continue
        names = labels[family.name]
        suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count")}
        for suffix in ("", *suffixes.get(family.type, ())):
            series[family.name + suffix] = names | ({"le"} if suffix == "_bucket" else set())
        for sample in family.samples:
            for key, value in sample.labels.items():
                values.setdefault((family.name, key), set()).add(value)
    return series, values


_SELECTOR = re.compile(r"\b(cxstream_[a-z_]+)(?:\{([^}]*)\})?")
_MATCHER = re.compile(r'(\w+)\s*(=~|!~|!=|=)\s*"([^"]*)"')


def test_the_rules_ask_only_for_series_and_label_values_cxstream_exports():
    series, values = _exported()
    for rule in _rules():
        found = _SELECTOR.findall(rule["expr"])
        assert found or "up{" in rule["expr"], rule["alert"]
        for name, matchers in found:
            assert name in series, f"{rule['alert']}: no metric {name}"
            base = re.sub(r"_(total|bucket|sum|count)$", "", name)
            for label, op, value in _MATCHER.findall(matchers):
                assert label in series[name], f"{rule['alert']}: {name} has no label {label}"
                known = values.get((base, label))
                if known is None or op.startswith("!"):
                    continue
                for wanted in value.split("|") if op == "=~" else [value]:
                    assert wanted in known, (
                        f"{rule['alert']}: {name}{{{label}}} is never {wanted!r}"
                    )


def test_every_alert_is_explained_in_the_operations_guide():
    guide = (ROOT / "docs" / "operations.md").read_text()
    for rule in _rules():
        assert f"`{rule['alert']}`" in guide, rule["alert"]
        assert rule["labels"]["severity"] in ("critical", "warning"), rule["alert"]
        assert rule["annotations"]["summary"], rule["alert"]
        assert rule["annotations"]["description"], rule["alert"]


def test_the_grafana_dashboard_queries_are_promql_prometheus_accepts(tmp_path):
    import json

    promtool = _promtool()
    dashboard = json.loads((ROOT / "config/grafana/dashboards/cxstream.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    rules = [{"record": f"grafana:panel_{i}", "expr": e} for i, e in enumerate(exprs)]
    (tmp_path / "panels.yml").write_text(
        yaml.safe_dump({"groups": [{"name": "g", "rules": rules}]})
    )
    _run(promtool, "check", "rules", "panels.yml", cwd=tmp_path)
