"""compose/: the web console, Prometheus (scrape config, alert rules) and Grafana (the Lapse dashboard).

Docker does not run on the development machines, so the files are parsed and
checked against what Lapse and Dramatiq actually export: every metric an
alert rule or a dashboard panel names must be in a real exposition.
"""

from __future__ import annotations

import inspect
import json
import re
from pathlib import Path
from typing import Any

import yaml
from dramatiq.brokers.stub import StubBroker
from prometheus_client import generate_latest

from tests.conftest import ROOT

COMPOSE = ROOT / "compose"
_METRIC = re.compile(r"\b((?:lapse|dramatiq)_[a-zA-Z0-9_]+|up)\b")
_SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count")}


def _exported_names(text: str) -> set[str]:
    names = set()
    for name, kind in re.findall(r"^# TYPE (\S+) (\S+)$", text, re.MULTILINE):
        names.add(name)
        names.update(name + suffix for suffix in _SUFFIXES.get(kind, ()))
    names.update(re.findall(r"^([a-zA-Z_:][\w:]*)[{ ]", text, re.MULTILINE))
    return names


def exported(pool: Any) -> set[str]:
    """Every metric name the worker's exposition server serves (Lapse's, from a real
    scrape of the collector; Dramatiq's, from its middleware's declarations)."""
    from dramatiq.middleware import prometheus

    from lapse.operator.metrics import registry
    from lapse.platform import breaker

    broker = StubBroker()
    broker.declare_queue("retention")
    names = _exported_names(generate_latest(registry(broker)).decode())
    source = inspect.getsource(prometheus)
    for kind, name in re.findall(r"prom\.(Counter|Gauge|Histogram)\(\s*\"(\w+)\"", source):
        names.add(name)
        names.update(name + s for s in _SUFFIXES.get(kind.lower(), ()))
    names.add(breaker.STATE._name)
    return names | {"up"}


def _load(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def test_compose_has_the_console_prometheus_and_grafana_and_their_files_exist():
    compose = _load(COMPOSE / "docker-compose.yml")
    services = compose["services"]
    assert "lapse web --host 0.0.0.0" in " ".join(services["web"]["command"])
    assert all(p.startswith("127.0.0.1:") for p in services["web"]["ports"])
    assert "-f lapse.operator.metrics:serve_metrics" in " ".join(services["worker"]["command"])
    assert services["worker"]["environment"]["LAPSE_METRICS_HOST"] == "0.0.0.0"
    for name in ("prometheus", "grafana"):
        for volume in services[name]["volumes"]:
            source = volume.split(":", 1)[0]
            if source.startswith("./"):
                assert (COMPOSE / source).exists(), (name, source)
    scrape = _load(COMPOSE / "prometheus" / "prometheus.yml")
    [job] = scrape["scrape_configs"]
    assert job["static_configs"][0]["targets"] == ["worker:9191"]
    assert scrape["rule_files"] == ["/etc/prometheus/alerts.yml"]


def _alert_rules() -> list[dict[str, Any]]:
    return [rule for group in _load(COMPOSE / "prometheus" / "alerts.yml")["groups"]
            for rule in group["rules"]]


def test_the_alert_rules_cover_what_the_operator_must_hear_about():
    exprs = {rule["alert"]: rule["expr"] for rule in _alert_rules()}
    wanted = {"LapseLeakPastAlertAge": "lapse_leaks_past_alert_age",
              "LapseSweepOverdue": "lapse_sweep_overdue",
              "LapseDeadLettersGrowing": "lapse_dead_letter_archive_size",
              "LapseCircuitOpen": "lapse_breaker_state",
              "LapseQueueOldestMessageTooOld": "lapse_queue_oldest_message_age_seconds"}
    for alert, metric in wanted.items():
        assert metric in exprs[alert], alert
    assert all({"alert", "expr", "for", "labels", "annotations"} <= set(r) for r in _alert_rules())


def test_every_metric_in_an_alert_rule_or_a_dashboard_panel_is_exported(pool):
    names = exported(pool)
    assert {"lapse_queue_messages", "lapse_renewals_total", "lapse_notifications_total",
            "dramatiq_messages_total", "dramatiq_message_duration_milliseconds_bucket"} <= names
    dashboard = json.loads((COMPOSE / "grafana" / "dashboards" / "lapse.json").read_text())
    exprs = [r["expr"] for r in _alert_rules()] + [
        t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    assert len(exprs) > 20
    for expr in exprs:
        used = set(_METRIC.findall(expr))
        assert used, expr
        assert used <= names, (expr, used - names)


def test_grafana_provisioning_points_at_prometheus_and_the_dashboard_folder():
    sources = _load(COMPOSE / "grafana" / "provisioning" / "datasources" / "prometheus.yml")
    [source] = sources["datasources"]
    assert source["url"] == "http://prometheus:9090" and source["uid"] == "lapse-prometheus"
    [provider] = _load(COMPOSE / "grafana" / "provisioning" / "dashboards" / "lapse.yml")["providers"]
    compose = _load(COMPOSE / "docker-compose.yml")
    mounts = dict(v.split(":")[:2] for v in compose["services"]["grafana"]["volumes"])
    assert mounts["./grafana/dashboards"] == provider["options"]["path"]
    dashboard = json.loads((COMPOSE / "grafana" / "dashboards" / "lapse.json").read_text())
    assert all(p["datasource"]["uid"] == source["uid"] for p in dashboard["panels"])
