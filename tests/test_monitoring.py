"""What Prometheus and Grafana users get (docs/monitoring.md): the alerting rules pass Debian's
`promtool check rules` and their unit tests (`promtool test rules`), and every metric the rules and
the Grafana dashboard name is one a real daemon exports. No promtool is a failure, not a skip
(scripts/test.sh installs Debian's prometheus package)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "deploy" / "prometheus" / "ngb-alerts.yml"
RULE_TESTS = ROOT / "deploy" / "prometheus" / "ngb-alerts.test.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "nanogridbot-dashboard.json"
METRIC = re.compile(r"\bngb_[a-z0-9_]+\b")
SUFFIXES = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_sum", "_count", "_created"),
            "summary": ("_sum", "_count", "_created"), "info": ("_info",), "gauge": ("",)}


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("promtool")
    assert binary, "no promtool: scripts/test.sh installs Debian's prometheus package"
    return subprocess.run([binary, *args], capture_output=True, text=True, cwd=RULES.parent, timeout=120)


def test_the_alert_rules_pass_promtool_and_their_unit_tests() -> None:
    checked = promtool("check", "rules", RULES.name)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS: 8 rules found" in checked.stdout, checked.stdout
    tested = promtool("test", "rules", RULE_TESTS.name)
    assert tested.returncode == 0, tested.stdout + tested.stderr
    # every alert is tested firing at least once
    alerts = set(re.findall(r"- alert: (\w+)", RULES.read_text()))
    fired = set(re.findall(r"alertname: (\w+)\n\s+exp_alerts:\n\s+- exp_labels", RULE_TESTS.read_text()))
    assert alerts - {"NgbNotScraped"} <= fired, alerts - fired  # absent() is only checked quiet


def exported(metrics_text: str) -> set[str]:
    """Every series name the exposition text declares (also families with no sample yet)."""
    names: set[str] = set()
    for family in text_string_to_metric_families(metrics_text):
        names.update(family.name + suffix for suffix in SUFFIXES.get(family.type, ("",)))
        names.update(sample.name for sample in family.samples)
    return names


def dashboard_expressions() -> list[str]:
    board = json.loads(DASHBOARD.read_text())
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids)) and all(p.get("gridPos") for p in board["panels"])
    return [t["expr"] for p in board["panels"] for t in p.get("targets", [])]


async def test_rules_and_dashboard_name_only_metrics_the_daemon_exports(run_daemon: Any) -> None:
    from ngb.records import Group
    from ngb.sandbox.model_usage import Usage

    d = await run_daemon(NGB_BUDGET_DAILY_USD="5")
    await d.daemon.registry.add(Group(chat="local:quiet", folder="quiet"))  # spends nothing: no series
    await d.post("main", "hello metrics")
    await d.wait_bot_replies("main", 1)
    d.daemon.budgets.record("main", Usage(input_tokens=1000, output_tokens=100, requests=1, model="claude-sonnet-4-5"))
    r = await d.http.get("/metrics")
    assert r.status_code == 200
    names = exported(r.text)
    assert {"ngb_budget_cap_usd", "ngb_state_disk_free_bytes", "ngb_container_start_failures_total"} <= names
    expressions = dashboard_expressions()
    assert len(expressions) >= 15
    used = {m for e in expressions for m in METRIC.findall(e)} | set(METRIC.findall(RULES.read_text()))
    assert used - names == set(), f"named in deploy/ but not exported by the daemon: {sorted(used - names)}"
    for wanted in ("ngb_messages_in_total", "ngb_turns_total", "ngb_reply_latency_seconds_bucket",
                   "ngb_budget_spent_usd", "ngb_outbox_depth", "ngb_channel_connected"):
        assert wanted in used, wanted  # the charts the issue asks for
    # the budget gauges carry what /status says
    figures = {(s.labels["group"], s.labels["period"]): s.value
               for f in text_string_to_metric_families(r.text) if f.name == "ngb_budget_cap_usd" for s in f.samples}
    assert figures[("main", "day")] == 5.0, figures
    spent = {s.labels["group"] for f in text_string_to_metric_families(r.text) if f.name == "ngb_budget_spent_usd"
             for s in f.samples}
    assert spent == {"main", "(all)"}, spent  # a group that spent nothing adds no series (1,000 groups: docs/scaling.md)


async def test_a_container_that_cannot_start_is_counted_for_the_alert(run_daemon: Any) -> None:
    import trio

    from tests.fakes.agent import FakeBehaviour

    d = await run_daemon(FakeBehaviour(fail_start=True))
    await d.post("main", "are you there?")
    with trio.fail_after(10):
        while True:
            text = (await d.http.get("/metrics")).text
            failures = {s.labels.get("group"): s.value for f in text_string_to_metric_families(text)
                        if f.name == "ngb_container_start_failures" for s in f.samples if s.name.endswith("_total")}
            if failures.get("main", 0) >= 1:
                break
            await trio.sleep(0.1)
    assert failures["main"] >= 1
