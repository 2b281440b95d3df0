"""The Prometheus Operator's resources in ``deploy/k8s/monitoring.yaml``, written from
``config/prometheus-alerts.yml`` by ``make k8s-monitoring``: the alerting rules are kept once, in
the file Prometheus loads (and promtool checks), and a test checks that the manifest carries the
same rules."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import yaml

__all__ = ["JOB", "monitoring_manifests", "render"]

JOB = "cxstream"  # the scrape job the alerting rules ask for (up{job="cxstream"})
_LABELS = {"release": "prometheus"}  # kube-prometheus-stack selects its release's resources

_HEADER = """\
# cxstream for the Prometheus Operator (kube-prometheus-stack and the like): a PodMonitor that
# scrapes every cxstream pod, and a PrometheusRule with cxstream's alerting rules
# (docs/operations.md#alerting-rules).
#
#   kubectl -n cx apply -f deploy/k8s/monitoring.yaml
#
# Your Prometheus takes the PodMonitors and PrometheusRules whose labels its podMonitorSelector
# and ruleSelector match: kube-prometheus-stack's are release: <its release name>, "prometheus"
# below; change them to yours. The PodMonitor names the scrape job by the pods' label app
# (jobLabel), so job="cxstream", as the rules expect. Use it instead of a Prometheus that
# discovers pods by their prometheus.io annotations, not beside one (each pod would be scraped
# twice). Written by `make k8s-monitoring` from config/prometheus-alerts.yml: change the rules
# there and run it again.
"""


def monitoring_manifests(rules: Path) -> list[dict[str, Any]]:
    """The PodMonitor and the PrometheusRule, with the rule groups of ``rules``."""
    groups = yaml.safe_load(rules.read_text(encoding="utf-8"))["groups"]
    pod_monitor = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PodMonitor",
        "metadata": {"name": "cxstream", "labels": dict(_LABELS)},
        "spec": {
            "jobLabel": "app",
            "selector": {"matchLabels": {"app": JOB}},
            "podMetricsEndpoints": [{"port": "metrics", "path": "/metrics", "interval": "15s"}],
        },
    }
    rule = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {"name": "cxstream", "labels": dict(_LABELS)},
        "spec": {"groups": groups},
    }
    return [pod_monitor, rule]


def render(rules: Path) -> str:
    """``deploy/k8s/monitoring.yaml`` as it is written."""
    body = yaml.safe_dump_all(monitoring_manifests(rules), sort_keys=False, width=100)
    return _HEADER + body


def main(argv: list[str]) -> int:
    """``python -m cxstream.devtools.k8s RULES OUT``: write the manifest."""
    if len(argv) != 2:
        print("usage: python -m cxstream.devtools.k8s RULES OUT", file=sys.stderr)
        return 2
    Path(argv[1]).write_text(render(Path(argv[0])), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
