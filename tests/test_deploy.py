"""The operations files (deploy/, docs/operations.md), checked with the tools that use them.

- Prometheus (deploy/prometheus): `promtool check rules` and `promtool test
  rules` pass; every alert has a severity, a component, a summary, a
  description, a unit test, and a runbook_url whose anchor is a section of
  docs/operations.md; its expressions name only metrics of the contract.
- Grafana (deploy/grafana/jpki-va.json): JSON, schemaVersion 39, every panel
  on the ``${DS_PROMETHEUS}`` data source variable, no overlapping panels;
  every PromQL expression parses (promtool, through a rule file made from
  them) and names only metrics of the contract.
- systemd (deploy/systemd): `systemd-analyze verify` says nothing about
  any unit (the 機構's two, a group appliance's two: its pull with the network the
  builder's unit has not, its responder on the group's directory; a node of several's
  five and the watch-compact timer), run with ``--root``
  on a temporary root that holds the units,
  a copy of the host's own unit directory (sysinit.target and friends) and
  executable stubs at the ExecStart/ExecReload paths (/opt/jpki-va/venv/bin/*,
  /bin/kill), which this machine does not have; `systemd-analyze security
  --offline` rates each below 2.0; `systemd-sysusers --root` creates the
  account from jpki-va.conf; the ExecStart lines parse with the real CLIs.
- The units' seccomp rules (SystemCallFilter=, MemoryDenyWriteExecute=,
  RestrictAddressFamilies=, RestrictNamespaces=, NoNewPrivileges=) are
  rebuilt here with libseccomp as systemd 252 builds them, and the real
  `crlbuilder build` and `responder serve` run under them and answer real
  `openssl ocsp` requests; a node of several's units' command lines, run as systemd
  would (EnvironmentFile=, LoadCredential= in %d, their ReadOnlyPaths=, ReadWritePaths=,
  StateDirectory= and InaccessiblePaths= mounted in ``unshare -rm``) under their rules against a real
  nats-server on 127.0.0.1 (Debian package nats-server), apply the record stream, fetch
  the signer's CRLs, replicate the registry, answer OCSP and the changes feed, and compact
  the watch stream. This file is that wrapper too:
  ``python tests/test_deploy.py sandbox UNIT -- ARGV...``.
- Why the responder unit keeps ``lock.mdb`` writable: on a read-only mount an
  LMDB reader does not register in the reader table (shown in a user and
  mount namespace made with unshare).
- docs/operations.md: every ``crlbuilder``/``responder`` command in it parses; every
  ```promql line of README.md and docs/ parses (promtool).

Tools: promtool (Debian package prometheus), systemd-analyze and
systemd-sysusers (systemd, which brings libseccomp2), unshare (util-linux),
openssl. A missing tool skips its test, except under CI (``CI`` set), where it fails.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import http.client
import io
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import pytest

from crlbuilder.natsconfig import NODE_ROLES, User, parse_users

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
ALERTS = DEPLOY / "prometheus" / "alerts.yml"
ALERTS_TEST = DEPLOY / "prometheus" / "alerts_test.yml"
DASHBOARD = DEPLOY / "grafana" / "jpki-va.json"
UNITS = DEPLOY / "systemd"
USERS = DEPLOY / "nats" / "users.toml"
CRLBUILDER_UNIT = UNITS / "jpki-va-crlbuilder.service"
RESPONDER_UNIT = UNITS / "jpki-va-responder.service"
GROUP_PULL_UNIT = UNITS / "jpki-va-group-pull.service"
GROUP_RESPONDER_UNIT = UNITS / "jpki-va-group-responder.service"
NODE_BUILDER_UNIT = UNITS / "jpki-va-node-builder.service"
NODE_SIGNER_UNIT = UNITS / "jpki-va-node-signer.service"
NODE_SYNC_UNIT = UNITS / "jpki-va-node-registry-sync.service"
NODE_RESPONDER_UNIT = UNITS / "jpki-va-node-responder.service"
NODE_COMPACT_UNIT = UNITS / "jpki-va-node-watch-compact.service"
NODE_COMPACT_TIMER = UNITS / "jpki-va-node-watch-compact.timer"
NODE_BOOTSTRAP_UNIT = UNITS / "jpki-va-node-bootstrap.service"
NODE_SNAPSHOT_UNIT = UNITS / "jpki-va-node-snapshot.service"
NODE_SNAPSHOT_TIMER = UNITS / "jpki-va-node-snapshot.timer"
NODE_UNITS = (
    NODE_BUILDER_UNIT, NODE_SIGNER_UNIT, NODE_SYNC_UNIT, NODE_RESPONDER_UNIT, NODE_COMPACT_UNIT,
    NODE_BOOTSTRAP_UNIT, NODE_SNAPSHOT_UNIT,
)  # fmt: skip
"""A node of several on hosts (docs/operations.md, "A node of several on hosts"): its builder
on the record stream (the signer node's instead), registry sync, responder, watch compaction,
its store from a snapshot when new, and the snapshots put for new nodes."""
ALL_UNITS = (CRLBUILDER_UNIT, RESPONDER_UNIT, GROUP_PULL_UNIT, GROUP_RESPONDER_UNIT, *NODE_UNITS)
"""The 機構's two units, a group appliance's two (団体署名検証者: its CRL feed, its responder),
and a node of several's."""
TIMERS = (NODE_COMPACT_TIMER, NODE_SNAPSHOT_TIMER)
CLUSTER_ENV = UNITS / "cluster.env"
SYSUSERS = UNITS / "jpki-va.conf"
OPERATIONS = ROOT / "docs" / "operations.md"
K8S_JPKI_VA = ROOT / "deploy" / "kubernetes" / "jpki-va.yaml"
BIN = Path(sys.executable).parent

# The metric contract (names fixed between the responder's metrics, the alert
# rules and the dashboard), parsed out of the team's metrics notes when this
# test was written (every jpkiva_* name in them) and listed again in
# docs/operations.md, "Metrics".
METRICS = frozenset(
    {
        "jpkiva_answer_signer_not_after_timestamp_seconds",
        "jpkiva_changes_unbound_cursors_total",
        "jpkiva_connections_evicted_total",
        "jpkiva_crl_bytes",
        "jpkiva_crl_file_broken_total",
        "jpkiva_crl_file_behind_total",
        "jpkiva_crl_entries",
        "jpkiva_crl_last_produced_timestamp_seconds",
        "jpkiva_fresh_signatures_total",
        "jpkiva_issuer_next_update_timestamp_seconds",
        "jpkiva_ledger_files_refused",
        "jpkiva_ledger_flush_failing",
        "jpkiva_ledger_gather_failures_total",
        "jpkiva_ledger_last_collected_timestamp_seconds",
        "jpkiva_ledger_last_gathered_timestamp_seconds",
        "jpkiva_ledger_last_shipped_timestamp_seconds",
        "jpkiva_ledger_ship_failures_total",
        "jpkiva_ledger_unshipped_counters",
        "jpkiva_metrics_renders_total",
        "jpkiva_ocsp_answers_total",
        "jpkiva_ocsp_signer_not_after_timestamp_seconds",
        "jpkiva_open_connections",
        "jpkiva_presign_walk_seconds",
        "jpkiva_presigned_next_update_timestamp_seconds",
        "jpkiva_provisions_remaining",
        "jpkiva_public_refused_total",
        "jpkiva_quota_remaining",
        "jpkiva_refusals_total",
        "jpkiva_registry_file_bad",
        "jpkiva_registry_synced_timestamp_seconds",
        "jpkiva_signer_errors_total",
        "jpkiva_signing_process_exits_total",
        "jpkiva_request_duration_seconds",
        "jpkiva_requests_total",
        "jpkiva_signing_duration_seconds",
        "jpkiva_stale_issuer",
        "jpkiva_tls_certificate_not_after_timestamp_seconds",
        "jpkiva_token_issuer_not_after_timestamp_seconds",
        "jpkiva_store_build",
        "jpkiva_store_commit",
        "jpkiva_store_entries",
        "jpkiva_store_last_commit_timestamp_seconds",
        "jpkiva_stream_head_seen_timestamp_seconds",
        "jpkiva_stream_lag_records",
        "jpkiva_stream_max_lag_records",
        "jpkiva_stream_refused",
        "jpkiva_watch_applied_operations",
        "jpkiva_watch_passed_over_operations",
        "jpkiva_watch_replication_broken",
        "jpkiva_watch_snapshot_loading",
        "jpkiva_watch_stream_operations",
        "jpkiva_watch_stream_seen_timestamp_seconds",
        "jpkiva_worker_restarts_total",
        "jpkiva_workers_configured",
        "jpkiva_workers_up",
    }
)
HISTOGRAMS = ("jpkiva_request_duration_seconds", "jpkiva_signing_duration_seconds")
SERIES = METRICS | {f"{h}_{s}" for h in HISTOGRAMS for s in ("bucket", "sum", "count")}
PROMETHEUS_OWN = frozenset({"up"})
"""Series Prometheus itself makes for every scrape target (alerts only)."""

pytestmark = pytest.mark.integration  # systemd, promtool and the sandboxed binaries


def _tool(name: str, package: str) -> str:
    path = shutil.which(name)
    if path is None:
        message = f"{name} not found: install the Debian package {package}"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


def _yaml() -> Any:
    try:
        import yaml
    except ImportError:
        message = "PyYAML is not installed (dev extra pyyaml)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return yaml


# --- PromQL: the metric names an expression selects ------------------------------

_KEYWORDS = frozenset(
    {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring"}
    | {"group_left", "group_right", "inf", "nan", "Inf", "NaN", "atan2"}
)


def metric_names(expr: str) -> set[str]:
    """Metric names selected by a PromQL expression (Grafana variables allowed).

    Strings, label matchers, range and subquery brackets, grouping label lists
    and Grafana's ``$variables`` are removed first; an identifier followed by
    ``(`` is a function or an aggregation; what is left, less the keywords, is
    the metric names."""
    s = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`', '""', expr)
    s = re.sub(r"\$\{[^}]*\}|\$\w+", " ", s)
    s = re.sub(r"\{[^}]*\}", " ", s)
    s = re.sub(r"\[[^\]]*\]", " ", s)
    s = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", s)
    names = set()
    for m in re.finditer(r"(?<![\w:.])([A-Za-z_:][\w:]*)(\s*\()?", s):
        if m.group(2) is None and m.group(1) not in _KEYWORDS:
            names.add(m.group(1))
    return names


def test_metric_names_finds_metrics_and_nothing_else() -> None:
    assert metric_names(
        'sum by (endpoint) (rate(jpkiva_requests_total{endpoint="ocsp", party!~"a|b"}[5m] '
        "offset 1h)) / on (job) group_left (x) foo:bar_ratio > bool 0.5e3"
    ) == {"jpkiva_requests_total", "foo:bar_ratio"}
    assert metric_names(
        'histogram_quantile(0.99, sum by (le) (rate(jpkiva_request_duration_seconds_bucket{endpoint="$endpoint", instance=~"${instance}"}[$__rate_interval])))'
    ) == {"jpkiva_request_duration_seconds_bucket"}
    assert metric_names("time() - max(jpkiva_store_last_commit_timestamp_seconds) > 7200") == {
        "jpkiva_store_last_commit_timestamp_seconds"
    }
    assert metric_names("rate(jpkiva_typo_total[5m]) or vector(0)") == {"jpkiva_typo_total"}


# --- Prometheus alert rules ------------------------------------------------------


def _alert_rules() -> list[dict[str, Any]]:
    doc = _yaml().safe_load(ALERTS.read_text(encoding="utf-8"))
    return [r for g in doc["groups"] for r in g["rules"] if "alert" in r]


def _slug(heading: str) -> str:
    """The anchor GitHub (and most Markdown renderers) give a heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def _anchors(markdown: str) -> set[str]:
    """Anchors of the headings, outside fenced code blocks (where # starts a comment)."""
    prose = re.sub(r"^\s*```.*?^\s*```", "", markdown, flags=re.M | re.S)
    return {_slug(m.group(1)) for m in re.finditer(r"^#{1,6}\s+(.+?)\s*#*$", prose, re.M)}


def test_promtool_check_rules() -> None:
    promtool = _tool("promtool", "prometheus")
    out = subprocess.run(
        [promtool, "check", "rules", str(ALERTS)],
        check=False,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"SUCCESS: {len(_alert_rules())} rules found" in out.stdout


def test_promtool_unit_tests_of_the_rules() -> None:
    promtool = _tool("promtool", "prometheus")
    out = subprocess.run(
        [promtool, "test", "rules", str(ALERTS_TEST)],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS" in out.stdout


def test_every_alert_is_unit_tested() -> None:
    doc = _yaml().safe_load(ALERTS_TEST.read_text(encoding="utf-8"))
    fired = {
        case["alertname"]
        for test in doc["tests"]
        for case in test.get("alert_rule_test", [])
        if case.get("exp_alerts")
    }
    names = {r["alert"] for r in _alert_rules()}
    assert {"JpkiVaIssuerStale", "JpkiVaIssuerNextUpdateSoon", "JpkiVaWorkerRestarts"} <= fired
    assert names - fired == set(), "alerts no unit test makes fire"


def test_alerts_have_severity_annotations_and_a_runbook_section() -> None:
    anchors = _anchors(OPERATIONS.read_text(encoding="utf-8"))
    rules = _alert_rules()
    assert len(rules) >= 10
    assert len({r["alert"] for r in rules}) == len(rules)
    for r in rules:
        name = r["alert"]
        assert r["labels"]["severity"] in {"critical", "warning"}, name
        assert r["labels"]["component"] in {"responder", "crlbuilder"}, name
        ann = r["annotations"]
        assert ann["summary"] and ann["description"], name
        url = urllib.parse.urlsplit(ann["runbook_url"])
        assert url.scheme == "https" and url.path.endswith("/docs/operations.md"), name
        assert url.fragment == _slug(name), f"{name}: anchor {url.fragment}"
        assert url.fragment in anchors, f"{name}: no section #{url.fragment} in docs/operations.md"


def test_alerts_use_only_contract_metrics() -> None:
    for r in _alert_rules():
        names = metric_names(r["expr"])
        assert names, r["alert"]
        assert names <= SERIES | PROMETHEUS_OWN, (r["alert"], names - SERIES)


# --- Grafana dashboard -----------------------------------------------------------


def _dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return data


def _panels(dash: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for p in dash["panels"]:
        yield p
        yield from p.get("panels", [])


def _exprs(dash: dict[str, Any]) -> list[tuple[str, str]]:
    """(where, expression) of every query of the dashboard, panels and variables."""
    out = [
        (f"panel {p['id']} {p['title']!r} {t['refId']}", t["expr"])
        for p in _panels(dash)
        for t in p.get("targets", [])
    ]
    for v in dash["templating"]["list"]:
        if v["type"] == "query":
            q = v["query"]["query"] if isinstance(v["query"], dict) else v["query"]
            m = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", q)
            assert m, f"variable {v['name']}: {q}"
            out.append((f"variable {v['name']}", m.group(1)))
    return out


def test_dashboard_is_grafana_json_on_the_datasource_variable() -> None:
    dash = _dashboard()
    assert dash["schemaVersion"] == 39
    assert dash["uid"] == "jpki-va" and dash["title"] == "jpki-va"
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    assert variables["DS_PROMETHEUS"]["type"] == "datasource"
    assert variables["DS_PROMETHEUS"]["query"] == "prometheus"
    ids = [p["id"] for p in _panels(dash)]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    boxes = []
    for p in _panels(dash):
        g = p["gridPos"]
        assert g["x"] >= 0 and g["x"] + g["w"] <= 24, p["title"]
        boxes.append((p["title"], g["x"], g["y"], g["x"] + g["w"], g["y"] + g["h"]))
        if p["type"] == "row":
            continue
        assert p["datasource"] == {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}, p["title"]
        assert p["description"], p["title"]
        assert p["targets"], p["title"]
        for t in p["targets"]:
            assert t["datasource"]["uid"] == "${DS_PROMETHEUS}", p["title"]
    for i, a in enumerate(boxes):
        for b in boxes[i + 1 :]:
            overlap = a[1] < b[3] and b[1] < a[3] and a[2] < b[4] and b[2] < a[4]
            assert not overlap, f"panels {a[0]!r} and {b[0]!r} overlap"


def test_dashboard_has_the_operations_panels() -> None:
    dash = _dashboard()
    text = json.dumps(dash)
    titles = {p["title"] for p in _panels(dash)}
    for title in (
        "Throughput by endpoint",
        "OCSP status mix",
        "Certificate status mix",
        "Answer source",
        "Seconds until nextUpdate per issuer",
        "Stale issuers",
        "Store commit age",
        "CRL age",
        "CRL size",
        "CRL entries",
        "Refusals by rule",
        "Requests by party",
        "Workers up",
        "Worker restarts",
        "Open connections",
        "Seconds since the record stream was last seen",
        "Seconds since the last ledger shipment and gathering",
    ):
        assert title in titles, title
    for q in ("0.5", "0.9", "0.99"):
        assert (
            f"histogram_quantile({q}, sum by (le) (rate(jpkiva_request_duration_seconds_bucket"
            in text
        )


def test_reading_the_dashboard_names_every_panel_and_only_those() -> None:
    """docs/operations.md, "Reading the dashboard": a row per dashboard row, a bullet
    (``- *Title*``, or ``*A*, *B*`` in one bullet) per panel, none for a panel that is not
    there (a title shown with a variable, "Latency percentiles ($endpoint)", is named
    without it). Four panels were added to the dashboard without a word in the guide."""
    text = OPERATIONS.read_text(encoding="utf-8")
    section = text.split("\n## Reading the dashboard\n", 1)[1].split("\n## ", 1)[0]
    bullets = re.findall(r"^- (\*[^*\n]+\*(?:, (?:and )?\*[^*\n]+\*)*)", section, re.M)
    named = {t for b in bullets for t in re.findall(r"\*([^*]+)\*", b)}
    rows = set(re.findall(r"^\*\*(.+?)\*\*", section, re.M))
    dash = _dashboard()
    panels = {
        re.sub(r" \(\$\w+\)$", "", p["title"]): p["type"] for p in _panels(dash) if p.get("title")
    }
    assert {t for t, kind in panels.items() if kind == "row"} == rows
    assert {t for t, kind in panels.items() if kind != "row"} == named


def test_dashboard_uses_only_contract_metrics() -> None:
    exprs = _exprs(_dashboard())
    used: set[str] = set()
    for where, expr in exprs:
        names = metric_names(expr)
        assert names, f"{where}: no metric in {expr}"
        assert names <= SERIES, f"{where}: not in the metrics contract: {names - SERIES}"
        used |= names
    # every metric of the contract is on the dashboard somewhere
    assert {n for n in METRICS if n not in HISTOGRAMS} <= used
    assert {f"{h}_bucket" for h in HISTOGRAMS} <= used


def test_dashboard_promql_parses(tmp_path: Path) -> None:
    """promtool parses every dashboard query, Grafana's variables replaced by values."""
    promtool = _tool("promtool", "prometheus")
    rules = []
    for i, (where, expr) in enumerate(_exprs(_dashboard())):
        e = re.sub(r"\$__(rate_interval|interval|range)\b", "5m", expr)
        e = re.sub(r"\$\{?\w+\}?", ".*", e)
        rules.append({"record": f"dashboard:query_{i}", "expr": e, "labels": {"where": where}})
    path = tmp_path / "dashboard_rules.yml"
    path.write_text(json.dumps({"groups": [{"name": "dashboard", "rules": rules}]}))
    out = subprocess.run(
        [promtool, "check", "rules", str(path)],
        check=False,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 0, out.stdout + out.stderr


def _doc_promql() -> list[tuple[str, str]]:
    """(where, expression) of each line of the ```promql blocks of README.md and docs/*.md
    (a runbook's block holds one expression a line)."""
    out = []
    for doc in (ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))):
        text = doc.read_text(encoding="utf-8")
        for m in re.finditer(r"```promql\n(.*?)```", text, re.S):
            line = text[: m.start()].count("\n") + 2
            for k, expr in enumerate(m.group(1).splitlines()):
                if expr.strip():
                    out.append((f"{doc.name}:{line + k}", expr.strip()))
    return out


def test_the_documents_promql_parses(tmp_path: Path) -> None:
    """promtool parses every query the runbooks and guides give an operator to paste (their
    metric names: test_documents_name_only_real_alerts_and_metrics)."""
    promtool = _tool("promtool", "prometheus")
    exprs = _doc_promql()
    assert len(exprs) >= 40, len(exprs)
    rules = [
        {"record": f"docs:query_{i}", "expr": e, "labels": {"where": w}}
        for i, (w, e) in enumerate(exprs)
    ]
    path = tmp_path / "doc_rules.yml"
    path.write_text(json.dumps({"groups": [{"name": "docs", "rules": rules}]}))
    out = subprocess.run(
        [promtool, "check", "rules", str(path)],
        check=False,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 0, out.stdout + out.stderr


# --- systemd units ---------------------------------------------------------------


def unit_settings(path: Path, section: str = "Service") -> dict[str, list[str]]:
    """``Key=Value`` lines of one section of a unit file; repeated keys accumulate."""
    out: dict[str, list[str]] = {}
    current = None
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and line.endswith("]"):
            current = line[1:-1]
            continue
        if current == section:
            key, _, value = line.partition("=")
            out.setdefault(key.strip(), []).append(value.strip())
    return out


_EXEC_PREFIXES: Final = "-@:+!"
"""What may precede an Exec*= command's path in a unit ("-": its failure is ignored)."""


def _verify_root(tmp_path: Path) -> Path:
    """A root for `systemd-analyze --root`: the units, the host's unit directory
    (for the targets they refer to) and executable stubs where their commands live."""
    root = tmp_path / "root"
    (root / "etc/systemd/system").mkdir(parents=True)
    for unit in (*ALL_UNITS, *TIMERS):
        shutil.copy(unit, root / "etc/systemd/system" / unit.name)
        for key in ("ExecStart", "ExecReload"):
            for line in unit_settings(unit).get(key, []):
                exe = root / shlex.split(line)[0].lstrip(_EXEC_PREFIXES).lstrip("/")
                exe.parent.mkdir(parents=True, exist_ok=True)
                exe.write_text("#!/bin/sh\nexit 0\n")
                exe.chmod(0o755)
    host_units = next(p for p in (Path("/usr/lib/systemd/system"), Path("/lib/systemd/system")))
    shutil.copytree(host_units, root / "usr/lib/systemd/system", symlinks=True)
    return root


def test_systemd_analyze_verify_is_silent(tmp_path: Path) -> None:
    analyze = _tool("systemd-analyze", "systemd")
    root = _verify_root(tmp_path)
    units = [str(root / "etc/systemd/system" / u.name) for u in (*ALL_UNITS, *TIMERS)]
    out = subprocess.run(
        [analyze, "verify", "--man=no", f"--root={root}", *units],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0 and out.stdout + out.stderr == "", out.stdout + out.stderr
    # the same check does catch a broken unit
    bad = root / "etc/systemd/system/jpki-va-bad.service"
    bad.write_text(
        CRLBUILDER_UNIT.read_text().replace("ProtectSystem=strict", "ProtectSytem=strict")
    )
    out = subprocess.run(
        [analyze, "verify", "--man=no", f"--root={root}", str(bad)],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "Unknown key 'ProtectSytem'" in out.stdout + out.stderr


def test_systemd_security_exposure_is_low(tmp_path: Path) -> None:
    analyze = _tool("systemd-analyze", "systemd")
    root = _verify_root(tmp_path)
    for unit in ALL_UNITS:
        out = subprocess.run(
            [analyze, "security", "--offline=yes", f"--root={root}", "--threshold=20", "--no-pager",
             str(root / "etc/systemd/system" / unit.name)],
            check=False, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert out.returncode == 0, out.stdout + out.stderr
        level = re.search(r"Overall exposure level for \S+: (\d+\.\d)", out.stdout)
        assert level and float(level.group(1)) < 2.0, out.stdout[-400:]


def test_sysusers_creates_the_service_account(tmp_path: Path) -> None:
    sysusers = _tool("systemd-sysusers", "systemd")
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    out = subprocess.run(
        [sysusers, f"--root={root}", str(SYSUSERS)],
        check=False,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 0, out.stderr
    passwd = (root / "etc/passwd").read_text().splitlines()
    entry = next(line.split(":") for line in passwd if line.startswith("jpki-va:"))
    assert entry[5] == "/var/lib/jpki-va" and entry[6] == "/usr/sbin/nologin"
    assert int(entry[2]) < 1000, "a system account"
    assert any(
        line.startswith("jpki-va:") for line in (root / "etc/group").read_text().splitlines()
    )


def test_units_run_real_commands_as_the_service_account() -> None:
    from crlbuilder import cli as crlbuilder_cli
    from responder import cli as responder_cli
    from responder.config import ENV_OVERRIDES

    crl = unit_settings(CRLBUILDER_UNIT)
    resp = unit_settings(RESPONDER_UNIT)
    for s in (crl, resp):
        assert s["User"] == ["jpki-va"] and s["Group"] == ["jpki-va"]
        assert s["DynamicUser"] == ["no"]
    # crlbuilder: long-running follow mode
    assert crl["Type"] == ["simple"]
    argv = shlex.split(crl["ExecStart"][0])
    assert Path(argv[0]).name == "crlbuilder"
    args = crlbuilder_cli.parser().parse_args(argv[1:])
    assert args.command == "build" and args.follow and str(args.config).startswith("/etc/jpki-va/")
    # responder: sd_notify, a reload that waits for the master's verdict, SIGTERM drain of
    # the master only
    assert resp["Type"] == ["notify"]
    assert _reload_argv(RESPONDER_UNIT)
    assert resp["KillSignal"] == ["SIGTERM"] and resp["KillMode"] == ["mixed"]
    assert int(resp["TimeoutStopSec"][0]) > 10, "longer than the default drain_timeout"
    argv = shlex.split(resp["ExecStart"][0])
    assert Path(argv[0]).name == "responder"
    args = responder_cli.parser().parse_args(argv[1:])
    assert args.command == "serve" and str(args.config).startswith("/etc/jpki-va/")
    # the environment names are the ones the programs read
    crlbuilder_config = (ROOT / "crlbuilder" / "config.py").read_text()
    for s, known in ((crl, crlbuilder_config), (resp, " ".join(ENV_OVERRIDES))):
        env = dict(e.split("=", 1) for e in s["Environment"])
        for name in env:
            if name.startswith("JPKI_VA_"):
                assert name in known, name
    env = dict(e.split("=", 1) for e in resp["Environment"])
    # the lock file of the store the responder reads stays writable (see below)
    # and the ledger (帳簿) with the quota table is the responder's own state
    # and the queue of token requests for crlbuilder (Act §38-3), optional
    assert resp["ReadWritePaths"] == [
        env["JPKI_VA_STORE"] + "/lock.mdb",
        "/var/lib/jpki-va/ledger",
        "-/var/lib/jpki-va/tokens/requests",
    ]
    asserted = unit_settings(RESPONDER_UNIT, "Unit")["AssertPathExists"]
    assert env["JPKI_VA_STORE"] + "/lock.mdb" in asserted
    assert str(args.config) in asserted


@pytest.mark.parametrize("unit", ALL_UNITS, ids=lambda u: u.stem)
def test_units_that_sign_are_not_restarted_when_a_token_refused_the_pin(unit: Path) -> None:
    """``crlbuilder build`` and ``responder serve`` exit `EXIT_PIN_REFUSED` when a token
    refused the PIN at start. Restarted on failure, they gave the wrong PIN again every 2 to
    10 s, until the HSM locked its user PIN, and every key in it; no limit of systemd's
    stopped it (5 starts in 10 s: a start and its RestartSec take longer)."""
    from crlbuilder.keys.signer import EXIT_PIN_REFUSED

    s = unit_settings(unit)
    argv = shlex.split(s["ExecStart"][0])
    signs = argv[1:2] == ["serve"] or argv[1:2] == ["build"]
    prevented = " ".join(s.get("RestartPreventExitStatus", [])).split()
    if signs:
        assert s["Restart"] == ["on-failure"]
        assert str(EXIT_PIN_REFUSED) in prevented, unit.name
    else:
        assert str(EXIT_PIN_REFUSED) not in prevented, unit.name


@pytest.mark.parametrize("unit", ALL_UNITS, ids=lambda u: u.stem)
def test_units_are_hardened(unit: Path) -> None:
    s = unit_settings(unit)
    one = {k: v[-1] for k, v in s.items()}
    for key, value in {
        "NoNewPrivileges": "yes",
        "CapabilityBoundingSet": "",
        "AmbientCapabilities": "",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "PrivateDevices": "yes",
        "ProtectKernelTunables": "yes",
        "ProtectKernelModules": "yes",
        "ProtectKernelLogs": "yes",
        "ProtectControlGroups": "yes",
        "ProtectClock": "yes",
        "ProtectHostname": "yes",
        "RestrictNamespaces": "yes",
        "RestrictRealtime": "yes",
        "RestrictSUIDSGID": "yes",
        "LockPersonality": "yes",
        "MemoryDenyWriteExecute": "yes",
        "SystemCallArchitectures": "native",
    }.items():
        assert one.get(key) == value, f"{unit.name}: {key}={one.get(key)!r}"
    assert s["SystemCallFilter"][0] == "@system-service"
    assert set(one["RestrictAddressFamilies"].split()) <= {"AF_UNIX", "AF_INET", "AF_INET6"}
    if unit == CRLBUILDER_UNIT:
        assert "/var/lib/jpki-va" in one["ReadWritePaths"]
    elif unit == RESPONDER_UNIT:
        assert "/var/lib/jpki-va" in one["ReadOnlyPaths"]
    elif unit in (NODE_BUILDER_UNIT, NODE_SIGNER_UNIT, NODE_BOOTSTRAP_UNIT):  # the store's writers
        assert s["ReadWritePaths"] == ["/var/lib/jpki-va"]
        assert "PrivateNetwork" not in s and s["SocketBindDeny"] == ["any"]
    elif unit in NODE_UNITS:  # the state read, only its own part of it written
        assert s["ReadOnlyPaths"] == ["/etc/jpki-va /var/lib/jpki-va"]
        assert all(p.lstrip("-").startswith("/var/lib/jpki-va/") for p in s["ReadWritePaths"])
        assert "-/etc/jpki-va/ca-keys" in one["InaccessiblePaths"].split()
        if unit != NODE_RESPONDER_UNIT:  # the responder listens; the others only connect
            assert s["SocketBindDeny"] == ["any"]
    else:  # a group's: its directory read, its store (pull) or ledger and lock (responder)
        assert s["ReadOnlyPaths"] == ["/var/lib/jpki-va-group"]
        assert all(p.startswith("/var/lib/jpki-va-group/") for p in s["ReadWritePaths"])
        assert s["StateDirectory"][0].startswith("jpki-va-group/")
        # the 機構's keys and state are not visible to a group's programs
        hidden = one["InaccessiblePaths"].split()
        assert {"-/etc/jpki-va/ca-keys", "-/var/lib/jpki-va"} <= set(hidden)


def test_the_group_units_run_the_group_appliance() -> None:
    """A group appliance's units (docs/operations.md, "Group appliance"): the pull of the
    group's directory, following, the only one that writes its store; the responder on
    the group's responder.toml, its environment naming the same store and registry; the
    pull reaches the 機構 (outgoing only: no socket bound) where crlbuilder has no network."""
    from crlbuilder import cli as crlbuilder_cli
    from responder import cli as responder_cli
    from responder.config import ENV_OVERRIDES

    group = Path("/var/lib/jpki-va-group")
    pull = unit_settings(GROUP_PULL_UNIT)
    resp = unit_settings(GROUP_RESPONDER_UNIT)
    for s in (pull, resp):
        assert s["User"] == ["jpki-va"] and s["DynamicUser"] == ["no"]
    assert pull["Type"] == ["simple"]
    args = crlbuilder_cli.parser().parse_args(shlex.split(pull["ExecStart"][0])[1:])
    assert (args.command, args.group, args.follow) == ("group", group, True)
    assert pull["ReadWritePaths"] == [str(group / "store")]
    assert pull["StateDirectory"] == ["jpki-va-group/store"]
    assert pull["SocketBindDeny"] == ["any"]
    assert "PrivateNetwork" not in pull and "PrivateNetwork" in unit_settings(CRLBUILDER_UNIT)
    pull_unit = unit_settings(GROUP_PULL_UNIT, "Unit")
    assert pull_unit["AssertPathExists"] == [str(group / "group.json")]
    assert "network-online.target" in pull_unit["Wants"]
    assert resp["Type"] == ["notify"] and resp["KillMode"] == ["mixed"]
    assert _reload_argv(GROUP_RESPONDER_UNIT)
    argv = shlex.split(resp["ExecStart"][0])
    args = responder_cli.parser().parse_args(argv[1:])
    assert args.command == "serve" and args.config == group / "responder.toml"
    env = dict(e.split("=", 1) for e in resp["Environment"])
    assert {k: v for k, v in env.items() if k.startswith("JPKI_VA_")} == {
        "JPKI_VA_STORE": str(group / "store"),
        "JPKI_VA_REGISTRY": str(group / "registry.toml"),
    }
    assert set(env) - {"PYTHONUNBUFFERED", "PYTHONDONTWRITEBYTECODE"} <= set(ENV_OVERRIDES)
    assert resp["ReadWritePaths"] == [str(group / "store" / "lock.mdb"), str(group / "ledger")]
    asserted = unit_settings(GROUP_RESPONDER_UNIT, "Unit")["AssertPathExists"]
    assert asserted == [str(group / "responder.toml"), str(group / "store" / "lock.mdb")]
    # what group init writes there is what the units name
    from crlbuilder.group.init import responder_toml

    written = responder_toml(group, 8081, 9481, "good")
    for path in ("store", "registry.toml", "ledger", "group.json"):
        assert f'"{group / path}"' in written, path


def _reload_argv(unit: Path, pid: int = 4242) -> list[str]:
    """``unit``'s ExecReload with ``$MAINPID`` as systemd gives it (``pid``), this venv's
    program for /opt/jpki-va/venv/bin's; checked to be `responder reload --pid $MAINPID`
    (not ``kill -HUP``, which systemd takes for success as soon as the signal is sent)."""
    from responder import cli as responder_cli

    argv = _exec_argv(unit, "ExecReload")
    assert argv[0] == "/opt/jpki-va/venv/bin/responder", unit.name
    args = responder_cli.parser().parse_args([w.replace("$MAINPID", str(pid)) for w in argv[1:]])
    assert (args.command, args.pid) == ("reload", pid), unit.name
    assert argv[argv.index("--pid") + 1] == "$MAINPID", unit.name
    return [_on_root(w, Path("/")).replace("$MAINPID", str(pid)) for w in argv]


def _exec_argv(unit: Path, key: str = "ExecStart", index: int = 0) -> list[str]:
    """The words of a unit's command line (its ``index``-th ``key``: a oneshot may run
    several, in order), as written (``${NATS}``, ``%d`` left as they are), less the prefixes
    of its path ("-": a failure ignored)."""
    argv = shlex.split(unit_settings(unit)[key][index])
    return [argv[0].lstrip(_EXEC_PREFIXES), *argv[1:]]


def test_the_node_units_run_a_node_of_several() -> None:
    """A node of several on hosts (docs/operations.md), as deploy/kubernetes runs one: the
    builder on the record stream (--no-crl, CA keys not visible) or, on the one signer node,
    with --crl and ticks; the registry sync following the bucket into the file the responder
    and the builder read; the responder and watch-compact with --nats and the watch secret
    every node shares. The NATS servers come from one EnvironmentFile; the secrets only by
    LoadCredential= (read in %d), never in a unit's text."""
    from crlbuilder import cli as crlbuilder_cli
    from responder import cli as responder_cli
    from responder.config import ENV_OVERRIDES

    registry = "/var/lib/jpki-va/registry/registry.toml"
    for unit in NODE_UNITS:
        s = unit_settings(unit)
        assert s["User"] == ["jpki-va"] and s["DynamicUser"] == ["no"], unit.name
        assert s["EnvironmentFile"] == ["/etc/jpki-va/cluster.env"], unit.name
        assert "/etc/jpki-va/cluster.env" in unit_settings(unit, "Unit")["AssertPathExists"]
        argv = _exec_argv(unit)
        # the NATS servers: the EnvironmentFile's, in one word (${NATS}, not $NATS)
        flag = "--nats" if Path(argv[0]).name == "responder" else "--source"
        assert argv[argv.index(flag) + 1] == "${NATS}", unit.name
        # every secret the command reads is a credential of the unit, loaded from /etc/jpki-va
        creds = dict(c.split(":", 1) for c in s.get("LoadCredential", []))
        env = dict(e.split("=", 1) for e in s["Environment"])
        read = {w.removeprefix("%d/") for w in [*argv, *env.values()] if w.startswith("%d/")}
        assert read == set(creds), unit.name
        # the NATS credential of the unit's role (deploy/nats/jpki-va-auth.conf), by variable
        assert env["JPKI_VA_NATS_NKEY_SEED"] == "%d/nats.seed", unit.name
        role = creds.pop("nats.seed").removeprefix("/etc/jpki-va/nats/").removesuffix(".seed")
        assert role in {u.role for u in parse_users(USERS.read_text())}, unit.name
        # and its user's own inbox (`User.inbox`; a node's role: the host's name, %H)
        host = "%H" if role in NODE_ROLES else ""
        assert env["JPKI_VA_NATS_INBOX"] == User(role, "$K", host).inbox, unit.name
        assert all(v == f"/etc/jpki-va/{k}" for k, v in creds.items()), creds
        plain = {"PYTHONUNBUFFERED", "PYTHONDONTWRITEBYTECODE", "TMPDIR"}
        assert set(env) - plain <= set(ENV_OVERRIDES), unit.name
        if "JPKI_VA_REGISTRY" in env:
            assert env["JPKI_VA_REGISTRY"] == registry
    assert "NATS=nats://" in CLUSTER_ENV.read_text()

    builder, signer = (unit_settings(u) for u in (NODE_BUILDER_UNIT, NODE_SIGNER_UNIT))
    for unit, s, crl in ((NODE_BUILDER_UNIT, builder, False), (NODE_SIGNER_UNIT, signer, True)):
        assert s["Type"] == ["simple"]
        args = crlbuilder_cli.parser().parse_args(_exec_argv(unit)[1:])
        assert (args.command, args.follow, args.crl) == ("build", True, crl), unit.name
        assert str(args.facts_key_file) == "%d/facts.key"
        conflicts = unit_settings(unit, "Unit")["Conflicts"][0].split()
        assert "jpki-va-crlbuilder.service" in conflicts  # one writer of the store
    assert crlbuilder_cli.parser().parse_args(_exec_argv(NODE_SIGNER_UNIT)[1:]).tick_seconds > 0
    assert "-/etc/jpki-va/ca-keys" in builder["InaccessiblePaths"][0].split()
    assert "InaccessiblePaths" not in signer  # the only one that reads the CA keys

    sync = unit_settings(NODE_SYNC_UNIT)
    args = responder_cli.parser().parse_args(_exec_argv(NODE_SYNC_UNIT)[1:])
    assert args.follow and str(args.registry) == registry
    assert sync["ReadWritePaths"] == [str(Path(registry).parent)]
    assert sync["StateDirectory"] == ["jpki-va/registry"]

    resp = unit_settings(NODE_RESPONDER_UNIT)
    assert resp["Type"] == ["notify"] and resp["KillMode"] == ["mixed"]
    assert _reload_argv(NODE_RESPONDER_UNIT)
    args = responder_cli.parser().parse_args(_exec_argv(NODE_RESPONDER_UNIT)[1:])
    assert args.command == "serve" and str(args.config) == "/etc/jpki-va/responder.toml"
    assert "jpki-va-responder.service" in unit_settings(NODE_RESPONDER_UNIT, "Unit")["Conflicts"]
    assert resp["ReadWritePaths"][:2] == [
        "/var/lib/jpki-va/store/lock.mdb",
        "/var/lib/jpki-va/ledger",
    ]

    compact = unit_settings(NODE_COMPACT_UNIT)
    assert compact["Type"] == ["oneshot"]
    argv = _exec_argv(NODE_COMPACT_UNIT)
    args = responder_cli.parser().parse_args(argv[1:])
    assert args.every is None, "a round per start: the timer paces them"
    assert str(args.config) == "/etc/jpki-va/responder.toml"
    # the same lists as the responder's: its ledger directory, written
    assert compact["ReadWritePaths"] == ["/var/lib/jpki-va/ledger"]
    for timer_file, unit, every in (
        (NODE_COMPACT_TIMER, NODE_COMPACT_UNIT, "hourly"),
        (NODE_SNAPSHOT_TIMER, NODE_SNAPSHOT_UNIT, "daily"),
    ):
        timer = unit_settings(timer_file, "Timer")
        assert timer["Unit"] == [unit.name] and timer["OnCalendar"] == [every]
        assert unit_settings(timer_file, "Install")["WantedBy"] == ["timers.target"]

    # a new node's store from the latest snapshot, before its builder (the pod's init
    # container): skipped where a store exists; no snapshot in the bucket (4) lets the
    # builder start, every other failure (NATS not answering, a failed read, a refused
    # snapshot) does not (Requires=, After=), and the unit is tried again
    boot = unit_settings(NODE_BOOTSTRAP_UNIT)
    assert boot["Type"] == ["oneshot"] and boot["ExecStart"][0].startswith("/")
    assert boot["SuccessExitStatus"] == [str(crlbuilder_cli.EXIT_NO_SNAPSHOT)]
    assert boot["Restart"] == ["on-failure"] and "RestartPreventExitStatus" not in boot
    assert boot["RestartSec"] == ["30s"]  # tried again, not in a tight loop
    args = crlbuilder_cli.parser().parse_args(_exec_argv(NODE_BOOTSTRAP_UNIT)[1:])
    assert (args.command, args.snapshot_command) == ("snapshot", "get") and args.wait > 0
    assert str(args.store) == "/var/lib/jpki-va/store"
    boot_unit = unit_settings(NODE_BOOTSTRAP_UNIT, "Unit")
    assert boot_unit["ConditionPathExists"] == ["!/var/lib/jpki-va/store/data.mdb"]
    for unit in (NODE_BUILDER_UNIT, NODE_SIGNER_UNIT):
        u = unit_settings(unit, "Unit")
        assert NODE_BOOTSTRAP_UNIT.name in u["Requires"][0].split(), unit.name
        assert NODE_BOOTSTRAP_UNIT.name in u["After"][0].split(), unit.name
    snap = unit_settings(NODE_SNAPSHOT_UNIT)
    args = crlbuilder_cli.parser().parse_args(_exec_argv(NODE_SNAPSHOT_UNIT)[1:])
    assert (args.command, args.snapshot_command) == ("snapshot", "put")
    # then, the put done (a oneshot's next ExecStart= runs only after the first ended on 0),
    # the record stream compacted behind the snapshot, a tail kept (docs/operations.md)
    assert len(snap["ExecStart"]) == 2
    args = crlbuilder_cli.parser().parse_args(_exec_argv(NODE_SNAPSHOT_UNIT, index=1)[1:])
    assert (args.command, args.stream_command) == ("stream", "compact")
    assert args.keep_days > 0 and str(args.store) == "/var/lib/jpki-va/store"
    env = dict(e.split("=", 1) for e in snap["Environment"])
    assert env["TMPDIR"] in snap["ReadWritePaths"], "the copy is made in TMPDIR, writable"


# --- the units' seccomp rules, rebuilt with libseccomp ----------------------------

_ALLOW = 0x7FFF0000
_KILL_PROCESS = 0x80000000
_CMP_EQ, _CMP_MASKED_EQ = 4, 7
_PROT_WRITE, _PROT_EXEC, _SHM_EXEC = 0x2, 0x4, 0o100000
_CLONE_NEW = (0x20000, 0x02000000, 0x04000000, 0x08000000, 0x10000000, 0x20000000, 0x40000000, 0x80)


def _errno_action(code: int) -> int:
    return 0x00050000 | (code & 0xFFFF)


class _ArgCmp(ctypes.Structure):
    _fields_ = [
        ("arg", ctypes.c_uint),
        ("op", ctypes.c_int),
        ("datum_a", ctypes.c_uint64),
        ("datum_b", ctypes.c_uint64),
    ]


def _syscall_groups() -> dict[str, list[str]]:
    """``@group -> members`` as this machine's systemd defines them."""
    text = subprocess.run(
        ["systemd-analyze", "syscall-filter", "--no-pager"],
        capture_output=True, text=True, check=True, timeout=30,
    ).stdout  # fmt: skip
    groups: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in text.splitlines():
        if line.startswith("@"):
            current = groups.setdefault(line.strip(), [])
        elif current is not None:
            item = line.split("#", 1)[0].strip()
            if item:
                current.append(item)
    return groups


def _expand(items: list[str], groups: dict[str, list[str]]) -> set[str]:
    out: set[str] = set()
    for item in items:
        out |= _expand(groups[item], groups) if item.startswith("@") else {item}
    return out


class _Filter:
    """One seccomp filter (libseccomp context), loaded on `load`."""

    def __init__(self, lib: ctypes.CDLL, default: int) -> None:
        self.lib = lib
        self.ctx = lib.seccomp_init(default)
        assert self.ctx, "seccomp_init failed"

    def nr(self, name: str) -> int | None:
        n = int(self.lib.seccomp_syscall_resolve_name(name.encode()))
        return n if n >= 0 else None  # unknown here, or another architecture's only

    def rule(self, action: int, syscall: str, *cmps: tuple[int, int, int, int]) -> None:
        n = self.nr(syscall)
        if n is None:
            return
        arr = (_ArgCmp * len(cmps))(*(_ArgCmp(*c) for c in cmps)) if cmps else None
        rc = self.lib.seccomp_rule_add_array(self.ctx, action, n, len(cmps), arr)
        assert rc == 0, f"seccomp_rule_add {syscall}: {rc}"

    def load(self) -> None:
        rc = self.lib.seccomp_load(self.ctx)  # sets no_new_privs first (NoNewPrivileges=)
        assert rc == 0, f"seccomp_load: {rc}"
        self.lib.seccomp_release(self.ctx)


def _sandbox_main(argv: list[str]) -> int:
    """``sandbox UNIT -- ARGV...``: load UNIT's seccomp rules, then exec ARGV.

    As systemd 252 does for SystemCallFilter= (an allow list; a ``~`` line
    removes from it; unlisted calls kill the process unless
    SystemCallErrorNumber= says otherwise), MemoryDenyWriteExecute=yes
    (no mmap W+X, no mprotect/pkey_mprotect to X, no shmat SHM_EXEC),
    RestrictAddressFamilies= (other families: EAFNOSUPPORT) and
    RestrictNamespaces=yes (no setns, no unshare/clone with CLONE_NEW*,
    clone3 gets ENOSYS so that libc falls back to clone). One filter each;
    the allow list is loaded last, since it forbids seccomp() itself."""
    unit, sep, command = Path(argv[0]), argv[1], argv[2:]
    assert sep == "--" and command
    s = unit_settings(unit)
    lib = ctypes.CDLL(ctypes.util.find_library("seccomp") or "libseccomp.so.2", use_errno=True)
    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_init.argtypes = [ctypes.c_uint32]
    lib.seccomp_rule_add_array.argtypes = [
        ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int, ctypes.c_uint, ctypes.POINTER(_ArgCmp)
    ]  # fmt: skip
    lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    lib.seccomp_load.argtypes = [ctypes.c_void_p]
    lib.seccomp_release.argtypes = [ctypes.c_void_p]
    groups = _syscall_groups()

    if s.get("MemoryDenyWriteExecute", ["no"])[-1] == "yes":
        f = _Filter(lib, _ALLOW)
        wx = _PROT_WRITE | _PROT_EXEC
        f.rule(_errno_action(errno.EPERM), "mmap", (2, _CMP_MASKED_EQ, wx, wx))
        f.rule(_errno_action(errno.EPERM), "mprotect", (2, _CMP_MASKED_EQ, _PROT_EXEC, _PROT_EXEC))
        f.rule(
            _errno_action(errno.EPERM), "pkey_mprotect", (2, _CMP_MASKED_EQ, _PROT_EXEC, _PROT_EXEC)
        )
        f.rule(_errno_action(errno.EPERM), "shmat", (2, _CMP_MASKED_EQ, _SHM_EXEC, _SHM_EXEC))
        f.load()
    if "RestrictAddressFamilies" in s:
        allowed = {int(getattr(socket, name)) for name in s["RestrictAddressFamilies"][-1].split()}
        f = _Filter(lib, _ALLOW)
        for family in range(64):
            if family not in allowed:
                f.rule(_errno_action(errno.EAFNOSUPPORT), "socket", (0, _CMP_EQ, family, 0))
        f.load()
    if s.get("RestrictNamespaces", ["no"])[-1] == "yes":
        f = _Filter(lib, _ALLOW)
        f.rule(_errno_action(errno.EPERM), "setns")
        f.rule(_errno_action(errno.ENOSYS), "clone3")
        for flag in _CLONE_NEW:
            for call in ("unshare", "clone"):
                f.rule(_errno_action(errno.EPERM), call, (0, _CMP_MASKED_EQ, flag, flag))
        f.load()
    if "SystemCallFilter" in s:
        allow: list[str] = []
        deny: list[str] = []
        for line in s["SystemCallFilter"]:
            (deny if line.startswith("~") else allow).extend(line.lstrip("~").split())
        assert allow, "an allow list (a first line without ~)"
        code = s.get("SystemCallErrorNumber", [""])[-1]
        default = _errno_action(getattr(errno, code)) if code else _KILL_PROCESS
        f = _Filter(lib, default)
        for name in sorted(_expand(allow, groups) - _expand(deny, groups)):
            f.rule(_ALLOW, name)
        if os.geteuid() == 0 and s.get("User", ["root"])[-1] != "root":
            # The unit runs as its own user; this sandbox (a CI container) as root. SQLite,
            # run by root, gives each journal it opens its database's owner (fchown, of
            # @privileged, which would kill the process), and ignores a failure: the
            # responder's ledger collection does so as root only, never under the unit.
            f.rule(_errno_action(errno.EPERM), "fchown")
        f.load()
    os.execv(command[0], command)
    return 127  # not reached


def _sandboxed(unit: Path, *argv: str) -> list[str]:
    return [sys.executable, str(Path(__file__).resolve()), "sandbox", str(unit), "--", *argv]


def _libseccomp() -> None:
    _tool("systemd-analyze", "systemd")
    if ctypes.util.find_library("seccomp") is None:
        message = "libseccomp not found: install the Debian package libseccomp2"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


def test_sandbox_enforces_the_units_rules() -> None:
    """Controls: what the responder unit forbids really fails in the sandbox."""
    _libseccomp()
    probe = (
        "import mmap, os, socket\n"
        "try:\n    mmap.mmap(-1, 4096, prot=7)\nexcept OSError as e:\n    print('wx', e.errno)\n"
        "try:\n    socket.socket(socket.AF_NETLINK, socket.SOCK_RAW)\nexcept OSError as e:\n    print('netlink', e.errno)\n"
        "import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\n"
        "if libc.unshare(0x10000000) != 0:\n    print('unshare', ctypes.get_errno())\n"
        "socket.socket().bind(('127.0.0.1', 0)); print('inet ok', flush=True)\n"
        "os.setuid(os.getuid())\n"
        "print('setuid allowed')\n"
    )
    out = subprocess.run(
        _sandboxed(RESPONDER_UNIT, sys.executable, "-c", probe),
        check=False, capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert out.stdout.split("\n")[:4] == [
        f"wx {errno.EPERM}",
        f"netlink {errno.EAFNOSUPPORT}",
        f"unshare {errno.EPERM}",
        "inet ok",
    ], out.stdout + out.stderr
    assert out.returncode == -signal.SIGSYS, "setuid (~@privileged) kills the process"
    # the crlbuilder unit has no network at all
    out = subprocess.run(
        _sandboxed(CRLBUILDER_UNIT, sys.executable, "-c", "import socket; socket.socket()"),
        check=False, capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert out.returncode == 1 and "Address family not supported" in out.stderr


def _openssl_ocsp(url: str, pop: Path, cert: str, issuer: str, token: str, *extra: str) -> str:
    out = subprocess.run(
        ["openssl", "ocsp", "-url", f"{url}/ocsp", "-issuer", str(pop / issuer),
         "-cert", str(pop / cert), "-CAfile", str(pop / issuer),
         "-header", f"Authorization=Bearer {token}", *extra],
        check=False, capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    return out.stdout + out.stderr


@pytest.mark.interop
def test_crlbuilder_and_responder_run_under_the_units_rules(built: Any, tmp_path: Path) -> None:
    """Under the seccomp rules of their units (MemoryDenyWriteExecute, the system
    call allow list, address families, namespaces): `crlbuilder build --follow`
    on a copy of the shared store applies a revocation dropped in the spool,
    pre-signs its answer in signing processes and produces CRLs; then `responder
    serve` (master, 2 workers) answers it from the pre-signed bytes, signs a
    fresh good answer (nonce) in its signing thread, and drains on SIGTERM."""
    _libseccomp()
    openssl = _tool("openssl", "openssl")
    store, crl, spool = tmp_path / "store", tmp_path / "crl", tmp_path / "store-spool"
    shutil.copytree(built.store, store)
    spool.mkdir()
    good = [a for a in built.answers if a.status.value == "good" and a.case == "good"]
    victim, other = good[0], good[-1]
    record = {
        "type": "revocation-request",
        "id": "test-deploy-1",
        "serial": victim.serial,
        "issuer": victim.issuer,
        "recorded_at": built.as_of.isoformat(),
        "reason": "loss",
    }
    (spool / "0001.jsonl").write_text(json.dumps(record) + "\n")
    out = subprocess.run(
        _sandboxed(CRLBUILDER_UNIT, str(BIN / "crlbuilder"), "build",
                   *built.builder_args(store=store, crl_dir=crl), "--sign-workers", "2",
                   "--follow", "--max-idle", "0.5"),
        check=False, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    events = [json.loads(line) for line in out.stderr.splitlines() if line.startswith("{")]
    applied = next(e for e in events if e["event"] == "spool-file")
    assert applied["applied"] == 1 and applied["ocsp_presigned"] >= 1, applied
    assert applied["crls"] and any(crl.glob("*.crl"))
    assert not (spool / "0001.jsonl").exists()  # applied, then removed (input.spool_keep_seconds)

    registry = tmp_path / "registry.toml"
    subprocess.run(
        [str(BIN / "responder"), "registry", "init", "--pki", str(built.pki), "--out", str(registry)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    ledger = tmp_path / "ledger"
    log = tmp_path / "responder.log"
    with log.open("wb") as err:
        p = subprocess.Popen(
            _sandboxed(RESPONDER_UNIT, str(BIN / "responder"), "serve", "--host", "127.0.0.1",
                       "--port", "0", "--workers", "2", "--store", str(store),
                       "--pki", str(built.pki), "--registry", str(registry), "--crl-dir", str(crl),
                       "--ledger-dir", str(ledger), "--metrics-port", "0"),
            stdout=subprocess.PIPE, stderr=err, text=True,
        )  # fmt: skip
    try:
        assert p.stdout is not None
        line = p.stdout.readline()
        assert line.startswith("listening on "), log.read_text()[-2000:]
        url = line.split()[-1]
        host, port = urllib.parse.urlsplit(url).netloc.rsplit(":", 1)
        conn = http.client.HTTPConnection(host, int(port), timeout=10)
        conn.request("GET", "/readyz")
        assert conn.getresponse().status == 200
        conn.close()
        token = (built.pki / "parties" / "both-verifier.token").read_text().strip()
        assert openssl
        text = _openssl_ocsp(url, built.population, other.cert, other.issuer_cert, token)
        assert "Response verify OK" in text and f"{other.cert}: good" in text, text
        text = _openssl_ocsp(
            url, built.population, victim.cert, victim.issuer_cert, token, "-no_nonce"
        )
        assert "Response verify OK" in text and f"{victim.cert}: revoked" in text, text
        assert "Reason: keyCompromise" in text, text
        # `systemctl reload`: the unit's ExecReload, under the same rules, waits for the
        # master's verdict (every worker confirmed) and says so
        out = subprocess.run(_sandboxed(RESPONDER_UNIT, *_reload_argv(RESPONDER_UNIT, p.pid)),
                             check=False, capture_output=True, text=True, timeout=60)  # fmt: skip
        assert out.returncode == 0, out.stderr + log.read_text()[-2000:]
        assert out.stdout == "reloaded: generation 1, 2 workers\n", out.stdout
        p.send_signal(signal.SIGTERM)
        assert p.wait(timeout=30) == 0, log.read_text()[-2000:]
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()


def _as_systemd_runs(
    unit: Path, root: Path, key: str = "ExecStart", index: int = 0
) -> tuple[list[str], dict[str, str], Path]:
    """``unit``'s command, environment and working directory as systemd would start them, on
    a copy of the hosts' layout under ``root``: ``${VAR}`` from its EnvironmentFile=,
    ``%d`` and $CREDENTIALS_DIRECTORY its credentials directory (each LoadCredential= source
    copied there as systemd 254 and later leave it on its tmpfs: 0400 and a POSIX ACL entry
    for the unit's user, which ``stat`` shows as mode 0440, the ACL's mask in the group bits),
    /etc/jpki-va and /var/lib/jpki-va under ``root``, the program of this
    venv for /opt/jpki-va/venv/bin's."""
    s = unit_settings(unit)

    def here(word: str) -> str:  # %H: the host's name, the node's (the root's) name
        return _on_root(word, root).replace("%H", root.name)

    creds = root / "run/credentials" / unit.name
    creds.mkdir(parents=True, exist_ok=True)
    for line in s.get("LoadCredential", []):
        name, source = line.split(":", 1)
        shutil.copy(here(source), creds / name)
        (creds / name).chmod(0o440)
    values: dict[str, str] = {}
    for f in s.get("EnvironmentFile", []):
        for raw in Path(here(f)).read_text().splitlines():
            if raw.strip() and not raw.lstrip().startswith("#"):
                name, _, value = raw.partition("=")
                values[name.strip()] = value.strip()
    argv = []
    for word in _exec_argv(unit, key, index):
        expanded = re.sub(r"\$\{(\w+)\}", lambda m: values[m.group(1)], word)
        argv.append(here(expanded.replace("%d", str(creds))))
    env = {"PATH": os.environ["PATH"], **{k: here(v) for k, v in values.items()}}
    if s.get("LoadCredential"):
        env["CREDENTIALS_DIRECTORY"] = str(creds)
    for e in s.get("Environment", []):
        name, value = e.split("=", 1)
        env[name] = here(value.replace("%d", str(creds)))
    return argv, env, Path(here(s["WorkingDirectory"][0]))


def _on_root(word: str, root: Path) -> str:
    """A path of the hosts' layout (/etc/jpki-va, /var/lib/jpki-va) on the copy under
    ``root``; the program of /opt/jpki-va/venv/bin, this venv's; other words unchanged."""
    word = word.replace("/opt/jpki-va/venv/bin/", f"{BIN}/")
    for prefix in ("/etc/jpki-va", "/var/lib/jpki-va"):
        if word.startswith(prefix):
            return f"{root}{word}"
    return word


def _mounted_as(unit: Path, root: Path, argv: list[str]) -> list[str]:
    """``argv`` run in a user and mount namespace (unshare -rm) where the layout under ``root``
    is mounted as ``unit``'s file system settings mount the hosts' own: /etc/jpki-va and
    /var/lib/jpki-va read-only (ProtectSystem=strict, ReadOnlyPaths=) but for the unit's
    ReadWritePaths= and StateDirectory= (bound writable first, kept under the read-only
    parents), its InaccessiblePaths= hidden (an empty tmpfs, or an empty file). What the
    program writes or reads outside what its unit gives it fails here as it would there."""
    s = unit_settings(unit)

    def paths(key: str) -> list[tuple[bool, Path]]:
        words = [w for line in s.get(key, []) for w in line.split()]
        return [(w.startswith("-"), Path(_on_root(w.lstrip("-"), root))) for w in words]

    writable = paths("ReadWritePaths")
    for d in s.get("StateDirectory", []):
        state = Path(_on_root(f"/var/lib/{d}", root))
        state.mkdir(parents=True, exist_ok=True, mode=0o700)  # systemd makes it
        writable.append((False, state))
    rw = [p for optional, p in writable if p.exists() or not optional]
    read_only = {p for _, p in paths("ReadOnlyPaths")}
    read_only |= {root / "etc/jpki-va", root / "var/lib/jpki-va"}  # ProtectSystem=strict
    ro = sorted(p for p in read_only if not any(p == w or w in p.parents for w in rw))
    empty = root / "run/empty-file"
    empty.parent.mkdir(parents=True, exist_ok=True)
    empty.touch(mode=0o000)
    lines = ["set -e"]
    lines += [f"mount --bind {shlex.quote(str(p))} {shlex.quote(str(p))}" for p in rw]
    for p in ro:
        q = shlex.quote(str(p))
        lines += [f"mount --rbind {q} {q}", f"mount -o remount,bind,ro {q}"]
    for optional, p in paths("InaccessiblePaths"):
        q = shlex.quote(str(p))
        if p.is_dir():
            lines.append(f"mount -t tmpfs -o mode=000 tmpfs {q}")
        elif p.exists():
            lines.append(f"mount --bind {shlex.quote(str(empty))} {q}")
        else:
            assert optional, f"{unit.name}: InaccessiblePaths={p} is missing"
    lines.append('exec "$@"')
    return ["unshare", "-rm", "sh", "-c", "\n".join(lines), "sh", *argv]


def _namespaces() -> None:
    """Skip (fail under CI) where user and mount namespaces (unshare -rm) are unavailable."""
    _tool("unshare", "util-linux")
    probe = subprocess.run(["unshare", "-rm", "true"], check=False, capture_output=True, timeout=10)
    if probe.returncode != 0:
        message = f"user and mount namespaces unavailable here: {probe.stderr.decode().strip()}"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


def _node_root(
    root: Path,
    built: Any,
    nats: str,
    watch_secret: str,
    http_port: int,
    seeds: dict[str, Path],
    nats_ca: str,
) -> None:
    """/etc/jpki-va and /var/lib/jpki-va of one node under ``root``, laid out as
    docs/operations.md, "A node of several on hosts" says: configuration, PKI, facts key and
    watch secret (0600), the NKey seeds of its units' roles (nats/, 0600), cluster.env, the
    registry copied from the first node."""
    etc, var = root / "etc/jpki-va", root / "var/lib/jpki-va"
    (etc / "nats").mkdir(parents=True, mode=0o700)
    for role, seed in seeds.items():
        shutil.copy(seed, etc / "nats" / f"{role}.seed")
        (etc / "nats" / f"{role}.seed").chmod(0o600)
    shutil.copytree(built.pki, etc / "pki")
    shutil.copy(built.facts_key, etc / "facts.key")
    (etc / "watch.secret").write_text(watch_secret + "\n")
    shutil.copy(nats_ca, etc / "nats-ca.pem")  # cluster.env's JPKI_VA_NATS_TLS_CA
    for secret in ("facts.key", "watch.secret"):
        (etc / secret).chmod(0o600)
    (etc / "cluster.env").write_text(
        CLUSTER_ENV.read_text().replace(
            next(x for x in CLUSTER_ENV.read_text().splitlines() if x.startswith("NATS=")),
            f"NATS={nats}",
        )
    )
    for d in ("registry", "ledger", "build"):
        (var / d).mkdir(parents=True, mode=0o700)
    shutil.copy(built.registry, var / "registry/registry.toml")
    (etc / "builder.toml").write_text(
        f"[store]\nmap_size_gib = 1\n[input]\nfollow_interval = 0.2\n"
        f'quarantine = "{var}/build/quarantine.jsonl"\nnotices = "{var}/build/notices.jsonl"\n'
        f'registry = "{var}/registry/registry.toml"\n'
        f'[stream]\ndurable = "{root.name}"\n[ocsp]\nsign_workers = 1\n'
        f'[crl]\ndirectory = "{var}/crl"\n'
    )
    (etc / "responder.toml").write_text(
        f'[server]\nhosts = ["127.0.0.1"]\nport = {http_port}\nworkers = 1\n'
        f'[store]\ncrl_dir = "{var}/crl"\n[metrics]\nenabled = false\n'
        f'[ledger]\ndir = "{var}/ledger"\n[cluster]\nnode = "{root.name}"\nnodes = 2\n'
    )


@pytest.mark.real_clock
def test_the_node_units_run_a_node_of_several_under_their_rules(built: Any, tmp_path: Path) -> None:
    """The node units' command lines, run as systemd would run them (their EnvironmentFile,
    their credentials in %d, their environment, their paths mounted as they say: see
    `_mounted_as`) under their seccomp rules, against a real
    nats-server on 127.0.0.1: the signer node's builder applies the record stream, its
    snapshot unit puts its store; another node, new, starts from it (its bootstrap unit),
    its builder follows the stream and fetches the signer's CRLs; its registry sync writes a
    change made on another node; its responder answers OCSP and the changes feed with the
    shared watch secret; its watch-compact round runs (nothing to do at the unit's
    thresholds), and one with --keep 0 --min-operations 1 snapshots and purges."""
    from crlbuilder.natsauth import NatsAuth, resolve
    from tests.support import procs
    from tests.support.nats import free_ports, nats_server, shipped_authorization, tls_files
    from tests.support.wait import until
    from tests.test_cluster import stream_seq

    _libseccomp()
    _namespaces()
    _tool("openssl", "openssl")
    nats_port, http_port = free_ports(2)
    secret = os.urandom(32).hex()
    signer_root, node_root = tmp_path / "signer", tmp_path / "node1"
    running: list[subprocess.Popen[bytes]] = []

    def start(unit: Path, root: Path, what: str) -> subprocess.Popen[bytes]:
        argv, env, cwd = _as_systemd_runs(unit, root)
        log = (root / f"{what}.log").open("ab")
        p = subprocess.Popen(
            _mounted_as(unit, root, _sandboxed(unit, *argv)), env=env, cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE if what == "responder" else log, stderr=log,
        )  # fmt: skip
        log.close()
        running.append(p)
        return p

    def run_once(
        unit: Path, root: Path, *more: str, index: int = 0
    ) -> subprocess.CompletedProcess[str]:
        argv, env, cwd = _as_systemd_runs(unit, root, index=index)
        ran = subprocess.run(
            _mounted_as(unit, root, _sandboxed(unit, *argv, *more)), env=env, cwd=cwd,
            check=False, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        print(f"--- {root.name}: {unit.name}", ran.stdout[-1000:], ran.stderr[-2000:], sep="\n")
        return ran

    # the server under the authorization nats-config writes; each unit with its role's seed
    # (the nodes' users as deploy/nats/users.toml has them: node1's builder and responder, the
    # signer's, each bound to its node; a host's seed is its role's file, /etc/jpki-va/nats/)
    shipped = shipped_authorization(tmp_path / "seeds", nodes=("node1",), signer="signer")
    seeds = shipped.seeds
    node_seeds = {r.lower().replace("_", "-"): seeds[r]
                  for r in ("SIGNER", "BUILDER", "SNAPSHOT", "RESPONDER", "WATCH_COMPACT")}  # fmt: skip

    # the server speaks TLS only, as the shipped ones (cluster.env's JPKI_VA_NATS_TLS_CA)
    tls = tls_files(tmp_path / "tls")
    tls_block = (
        f'tls {{ cert_file: "{tls["tls.crt"]}", key_file: "{tls["tls.key"]}", timeout: 2 }}\n'
    )
    probe = resolve(NatsAuth(tls_ca=tls["ca.crt"]), []).kwargs | shipped.probe

    def as_role(role: str) -> dict[str, str]:
        return {**os.environ, **shipped.env(role), "JPKI_VA_NATS_TLS_CA": tls["ca.crt"]}

    with nats_server(
        tmp_path / "nats", nats_port, extra=shipped.extra + tls_block, probe=probe
    ) as server:
        for root in (signer_root, node_root):
            _node_root(root, built, server.source, secret, http_port, node_seeds, tls["ca.crt"])
        try:
            out = subprocess.run(
                [str(BIN / "crlbuilder"), "publish", "--source", server.source,
                 "--facts-key-file", str(built.facts_key), str(built.population / "records")],
                check=True, capture_output=True, text=True, timeout=300,
                env=as_role("PUBLISHER"),
            )  # fmt: skip
            total = int(json.loads(out.stdout)["last_seq"])
            signer = start(NODE_SIGNER_UNIT, signer_root, "builder")
            stores = [root / "var/lib/jpki-va/store" for root in (signer_root, node_root)]
            until(lambda: stream_seq(stores[0]) >= total, 180, "the signer applied the stream")
            # a snapshot of the signer's store put by its unit; node1, new, starts from it
            assert run_once(NODE_SNAPSHOT_UNIT, signer_root).returncode == 0
            assert not any((signer_root / "var/lib/jpki-va/snapshot").iterdir()), "copy removed"
            # then its compaction, as the unit runs it (the snapshot role's credential and
            # sandbox): a week's tail keeps every message; with none, the stream is purged
            # through the snapshot, and node1 still starts from it below
            ran = run_once(NODE_SNAPSHOT_UNIT, signer_root, index=1)
            assert ran.returncode == 0 and json.loads(ran.stdout)["purged_through"] == 0
            ran = run_once(NODE_SNAPSHOT_UNIT, signer_root, "--keep-days", "0", index=1)
            assert ran.returncode == 0, ran.stderr
            compacted = json.loads(ran.stdout)
            assert compacted["purged_through"] == compacted["snapshot_seq"] >= total
            assert compacted["first"] == compacted["snapshot_seq"] + 1
            assert not any((signer_root / "var/lib/jpki-va/snapshot").iterdir()), "read removed"
            assert run_once(NODE_BOOTSTRAP_UNIT, node_root).returncode == 0
            assert stream_seq(stores[1]) >= total, "node1's store is the snapshot"
            builder = start(NODE_BUILDER_UNIT, node_root, "builder")
            sync = start(NODE_SYNC_UNIT, node_root, "sync")
            until(lambda: stream_seq(stores[1]) >= total, 60, "node1 follows the stream")
            crls = node_root / "var/lib/jpki-va/crl"
            until(lambda: any(crls.glob("*.crl")), 60, "the signer's CRLs fetched by node1")
            assert any((signer_root / "var/lib/jpki-va/crl").glob("*.crl"))

            # a change made on another node reaches node1's registry file through its sync
            other = tmp_path / "elsewhere.toml"
            shutil.copy(built.registry, other)
            subprocess.run(
                [str(BIN / "responder"), "registry", "suspend", "--registry", str(other),
                 "--nats", server.source, "--id", "sig-verifier", "--article", "Act §18(6)(1)",
                 "--reason", "test"],
                check=True, capture_output=True, timeout=60, env=as_role("REGISTRY_ADMIN"),
            )  # fmt: skip
            audit = node_root / "var/lib/jpki-va/registry/registry.audit.jsonl"
            until(lambda: audit.exists() and '"replicate"' in audit.read_text(), 30,
                  "the suspension replicated to node1's registry")  # fmt: skip

            responder = start(NODE_RESPONDER_UNIT, node_root, "responder")
            url = procs.wait_line(responder, r"listening on (\S+)", 60)
            until(lambda: _status(f"{url}/readyz") == 200, 30, "node1 ready")
            good = next(a for a in built.answers if a.status.value == "good" and a.case == "good")
            token = (built.pki / "parties" / "both-verifier.token").read_text().strip()
            text = _openssl_ocsp(url, built.population, good.cert, good.issuer_cert, token)
            assert "Response verify OK" in text and f"{good.cert}: good" in text, text
            ref = {"issuer": good.issuer, "serial": f"{good.serial:x}"}
            for _ in range(3):  # three operations on the watch stream
                got = _v1(url, token, "/v1/watch", {"add": [ref]})
                assert got[0] == 200, got
            assert _v1(url, token, "/v1/changes")[0] == 200

            ran = run_once(NODE_COMPACT_UNIT, node_root)
            assert ran.returncode == 0 and ran.stdout.startswith("nothing to compact"), ran
            ran = run_once(NODE_COMPACT_UNIT, node_root, "--keep", "0", "--min-operations", "1")
            assert ran.returncode == 0, ran.stderr[-2000:]
            assert "snapshot of operation 3" in ran.stdout and "purged" in ran.stdout, ran.stdout
            assert _v1(url, token, "/v1/changes")[0] == 200

            for p in (responder, sync, builder, signer):
                assert procs.stop(p, signal.SIGTERM, 30) == 0, p.args
        finally:
            for p in running:
                if p.poll() is None:
                    procs.stop(p, signal.SIGKILL)
                if p.stdout is not None:
                    p.stdout.close()
            for log in sorted(tmp_path.glob("*/*.log")):
                print(f"--- {log}", *log.read_text(errors="replace").splitlines()[-15:], sep="\n")


def _status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return int(r.status)
    except urllib.error.HTTPError as e:
        return int(e.code)
    except OSError:
        return 0


def _v1(url: str, token: str, path: str, body: object | None = None) -> tuple[int, Any]:
    req = urllib.request.Request(
        f"{url}{path}", data=json.dumps(body).encode() if body is not None else None,
        method="POST" if body is not None else "GET",
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )  # fmt: skip
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return int(r.status), json.loads(r.read())
    except urllib.error.HTTPError as e:
        return int(e.code), e.read().decode(errors="replace")


# --- LMDB readers on a read-only mount --------------------------------------------

_READER = (
    "import sys\n"
    "from crlbuilder.store.lmdbstore import Store\n"
    "s = Store.open(sys.argv[1], readonly=True)\n"
    "txn = s.env.begin()\n"
    "print('reading', flush=True)\n"
    "sys.stdin.read()\n"
)


@contextlib.contextmanager
def _namespaced_reader(store: Path, mount: Path, lock_writable: bool) -> Iterator[None]:
    """A reader of ``store`` through ``mount``, a read-only bind mount (as
    ReadOnlyPaths= makes one), optionally with lock.mdb bound writable over it
    (as the responder unit's ReadWritePaths= does), inside unshare -rm."""
    script = 'mount --bind "$1" "$2" && mount -o remount,bind,ro "$2"'
    if lock_writable:
        script += ' && mount --bind "$1/lock.mdb" "$2/lock.mdb"'
    script += ' && exec "$3" -c "$4" "$2"'
    p = subprocess.Popen(
        ["unshare", "-rm", "sh", "-c", script, "sh", str(store), str(mount), sys.executable, _READER],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
    )  # fmt: skip
    try:
        assert p.stdout is not None and p.stderr is not None
        line = p.stdout.readline()
        assert line == "reading\n", p.stderr.read()
        yield
    finally:
        if p.stdin:
            p.stdin.close()
        p.wait(timeout=10)


def test_lmdb_reader_needs_a_writable_lock_file(tmp_path: Path) -> None:
    """A read-only environment on a read-only file system opens WITHOUT the
    lock file (LMDB's EROFS fallback): its read transaction is not in the
    reader table, so the writer may reuse pages under it. With lock.mdb bound
    writable over the read-only store, the reader registers."""
    from crlbuilder.store.lmdbstore import Store

    _namespaces()
    writer = Store.open(tmp_path / "store", readonly=False, map_size=1 << 24)
    mount = tmp_path / "mnt"
    mount.mkdir()
    try:
        with _namespaced_reader(writer.path, mount, lock_writable=False):
            assert "(no active readers)" in writer.env.readers()
        with _namespaced_reader(writer.path, mount, lock_writable=True):
            assert "(no active readers)" not in writer.env.readers()
    finally:
        writer.close()


# --- docs/operations.md ------------------------------------------------------------


def _shell_commands(markdown: str) -> Iterator[list[str]]:
    """Each simple command of the ```sh blocks, as words (comments, continuation
    lines, pipes and redirections handled; here-documents skipped)."""
    for block in re.findall(r"```(?:sh|bash|console)\n(.*?)```", markdown, re.S):
        text = re.sub(r"<<'?(\w+)'?\n.*?\n\1\n", "\n", block, flags=re.S)
        text = text.replace("\\\n", " ")
        for line in text.splitlines():
            lex = shlex.shlex(line, posix=True, punctuation_chars=True)
            lex.whitespace_split = True
            lex.commenters = "#"
            words: list[str] = []
            for tok in lex:
                if tok and set(tok) <= set("|&;<>()"):
                    if words:
                        yield words
                    words = []
                    continue
                words.append(tok)
            if words:
                yield words


def test_operations_commands_are_real() -> None:
    from crlbuilder import cli as crlbuilder_cli
    from responder import cli as responder_cli

    parsers = {"crlbuilder": crlbuilder_cli.parser, "responder": responder_cli.parser}
    seen = {"crlbuilder": 0, "responder": 0}
    units = {u.name.removesuffix(".service") for u in UNITS.glob("*.service")}
    units |= {u.name for u in UNITS.glob("*.timer")}
    assigned: dict[str, str] = {}  # NAME='value' lines before the commands that use $NAME
    for written in _shell_commands(OPERATIONS.read_text(encoding="utf-8")):
        if len(written) == 1 and (m := re.fullmatch(r"([A-Z_][A-Z0-9_]*)=(.*)", written[0])):
            assigned[m.group(1)] = m.group(2)
            continue
        words = [
            re.sub(r"\$\{?([A-Z_][A-Z0-9_]*)\}?", lambda v: assigned.get(v[1], v[0]), w)
            for w in written
        ]
        if words[0] in {"systemctl", "journalctl"}:
            named = {w.removesuffix(".service") for w in words if w.startswith("jpki-va-")}
            assert named <= units, f"docs/operations.md: {' '.join(words)!r}: no such unit"
        for i, w in enumerate(words):
            name = Path(w).name
            if name in parsers and (i == 0 or words[i - 1] in {"--", "sudo", "exec"}):
                said = io.StringIO()
                try:
                    with contextlib.redirect_stdout(said), contextlib.redirect_stderr(said):
                        parsers[name]().parse_args(words[i + 1 :])
                except SystemExit as e:  # --help exits 0, a usage error 2
                    if e.code not in (0, None):
                        pytest.fail(f"docs/operations.md: {' '.join(words)!r}: {said.getvalue()}")
                seen[name] += 1
                break
    assert seen["crlbuilder"] >= 5 and seen["responder"] >= 2, seen


def test_operations_installs_every_unit_it_enables() -> None:
    """Each jpki-va unit or timer a ``systemctl enable`` of docs/operations.md starts was
    copied to /etc/systemd/system by an ``install`` line before it (its globs matched
    against deploy/systemd): a timer enabled but never installed is "Unit file ... does not
    exist" on the host (the node snapshot timer was)."""
    installed: set[str] = set()
    enabled = 0
    for words in _shell_commands(OPERATIONS.read_text(encoding="utf-8")):
        if words[0] == "install" and words[-1].rstrip("/") == "/etc/systemd/system":
            for w in words[1:-1]:
                if w.startswith("/opt/jpki-va/src/deploy/systemd/"):
                    installed |= {u.name for u in UNITS.glob(Path(w).name)}
        elif words[:2] == ["systemctl", "enable"]:
            for w in words[2:]:
                if w.startswith("jpki-va-"):
                    name = w if "." in w else f"{w}.service"
                    assert name in installed, f"docs/operations.md enables {name}, not installed"
                    enabled += 1
    assert enabled >= 10, enabled


def test_operations_lists_the_metrics_contract() -> None:
    text = OPERATIONS.read_text(encoding="utf-8")
    section = text.split("\n## Metrics", 1)[1].split("\n## ", 1)[0]
    assert set(re.findall(r"`(jpkiva_\w+)`", section)) == METRICS


def _runbook_severity(text: str, alert: str) -> str | None:
    """The severity the ``### alert`` section of ``text`` says in its "**Means** (...)", or
    None: read in that section only, up to the next heading."""
    section = re.split(r"^#{1,3} ", text.split(f"\n### {alert}\n", 1)[1], maxsplit=1, flags=re.M)[0]
    said = re.search(r"\*\*Means\*\* \((\w+)\)", section)
    return said.group(1) if said else None


def test_a_runbook_section_without_its_severity_says_none() -> None:
    """Its own section only: the next one's "**Means**" is not taken for it (a section that
    lost its line passed, the next alert's severity read as its own)."""
    text = "## Alerts\n\n### A\n\nIt means a.\n\n### B\n\n**Means** (warning): b.\n"
    assert _runbook_severity(text, "A") is None
    assert _runbook_severity(text, "B") == "warning"


def test_documents_name_only_real_alerts_and_metrics() -> None:
    """Each alert a document names (README.md, docs/*.md) is a rule of alerts.yml, each
    ``### JpkiVa...`` section of "Alerts" is one, and each is there once, its "**Means**"
    naming the rule's severity; each metric
    a document names is a series of the contract."""
    alerts = {
        r["alert"] for g in _yaml().safe_load(ALERTS.read_text())["groups"] for r in g["rules"]
    }
    text = OPERATIONS.read_text(encoding="utf-8")
    sections = re.findall(r"^### (JpkiVa\w+)$", text, re.M)
    assert sorted(sections) == sorted(alerts)
    for group in _yaml().safe_load(ALERTS.read_text())["groups"]:
        for rule in group["rules"]:  # the runbook's "**Means** (severity)" is the rule's
            severity = _runbook_severity(text, rule["alert"])
            assert severity == rule["labels"]["severity"], rule["alert"]
    for doc in (ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))):
        said = doc.read_text(encoding="utf-8")
        assert set(re.findall(r"\bJpkiVa\w+", said)) <= alerts, doc.name
        assert set(re.findall(r"\bjpkiva_\w+", said)) <= SERIES, doc.name


def test_shell_command_splitter() -> None:
    md = (
        "```sh\n"
        "runuser -u jpki-va -- /opt/x/bin/crlbuilder build \\\n"
        "    --config /etc/a.toml   # first build\n"
        "curl -s http://h/readyz | grep ready && systemctl reload x\n"
        "python - <<'EOF'\nprint(1)\nEOF\n"
        "```\n"
    )
    assert list(_shell_commands(md)) == [
        [
            "runuser",
            "-u",
            "jpki-va",
            "--",
            "/opt/x/bin/crlbuilder",
            "build",
            "--config",
            "/etc/a.toml",
        ],
        ["curl", "-s", "http://h/readyz"],
        ["grep", "ready"],
        ["systemctl", "reload", "x"],
        ["python", "-"],
    ]


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "sandbox":
        sys.exit(_sandbox_main(sys.argv[2:]))
    sys.exit(f"usage: {sys.argv[0]} sandbox UNIT -- ARGV...")


@pytest.mark.unit
def test_the_kubectl_exec_commands_of_operations_expand_the_pods_variables_in_the_pod() -> None:
    """A `kubectl exec POD -- cmd "$NATS"` has the operator's shell expand ``$NATS`` (unset
    there: ``--source ""``, refused); the pod's environment is read only by a shell in the
    pod (``-- sh -c '... "$NATS" ...'``). Each such command's words are also a real command
    line (``crlbuilder``'s parser takes them)."""
    from crlbuilder import cli as crlbuilder_cli

    text = OPERATIONS.read_text()
    spans = re.findall(r"`(kubectl\s+exec\s[^`]*)`", text, flags=re.DOTALL)
    assert spans, "operations.md shows no kubectl exec command"
    blocks = re.findall(r"```sh\n(.*?)```", text, flags=re.S)  # its shell blocks' lines too
    in_blocks = [ln.strip() for b in blocks for ln in b.splitlines() if "kubectl exec " in ln]
    assert in_blocks, "operations.md's shell blocks show no kubectl exec command"
    environments = _kubernetes_container_environments()
    for span in spans + in_blocks:
        words = shlex.split(" ".join(span.split()), comments=True)
        cmd = words[words.index("--") + 1 :]
        ends = [i for i, w in enumerate(cmd) if w in ("||", "&&", ";", "|")]
        cmd = cmd[: ends[0]] if ends else cmd  # what the operator's shell does after it
        if cmd[:2] == ["sh", "-c"]:
            assert len(cmd) == 3, span
            # every variable the pod's shell reads is in that container's environment, in
            # each StatefulSet that has a container of that name
            container = words[words.index("-c") + 1]
            envs = environments[container]
            assert envs, span
            for name in re.findall(r"\$\{?(\w+)", cmd[2]):
                assert all(name in env for env in envs), (span, name)
            cmd = shlex.split(cmd[2])
        else:
            assert not re.search(r"\$\{?\w", span.split(" -- ", 1)[1]), (
                f"{span!r}: the operator's shell expands the pod's variables"
            )
        if cmd[0] == "crlbuilder":
            crlbuilder_cli.parser().parse_args(cmd[1:])


def _kubernetes_container_environments() -> dict[str, list[set[str]]]:
    """For each container name of deploy/kubernetes/jpki-va.yaml's StatefulSets, the names of
    its environment (its env and the ConfigMaps of its envFrom) in each that has one."""
    import yaml

    docs = [d for d in yaml.safe_load_all(K8S_JPKI_VA.read_text()) if d]
    maps = {d["metadata"]["name"]: set(d["data"]) for d in docs if d["kind"] == "ConfigMap"}
    out: dict[str, list[set[str]]] = {}
    for sts in (d for d in docs if d["kind"] == "StatefulSet"):
        pod = sts["spec"]["template"]["spec"]
        for c in pod.get("initContainers", []) + pod["containers"]:
            names = {e["name"] for e in c.get("env", [])}
            for ref in c.get("envFrom", []):
                names |= maps[ref["configMapRef"]["name"]]
            out.setdefault(c["name"], []).append(names)
    return out


@pytest.mark.unit
def test_the_kubernetes_adopt_steps_hold_each_statefulsets_builder_container() -> None:
    """docs/operations.md's Kubernetes steps of "A record stream made again" hold the
    builders by replacing the command of the container at an index of the pod template:
    that container is the builder in every StatefulSet the steps name, the pods they delete
    and adopt in are those StatefulSets' pods (the signer's first), the hold is undone and
    the shipped update strategy put back."""
    import yaml

    text = OPERATIONS.read_text()
    section = text.split("### A record stream made again", 1)[1].split("\n### ", 1)[0]
    [block] = [b for b in re.findall(r"```sh\n(.*?)```", section, flags=re.S) if "kubectl" in b]
    lines = [ln.strip() for ln in block.splitlines() if ln.strip()]
    [index] = {int(i) for i in re.findall(r"/spec/template/spec/containers/(\d+)/command", block)}
    loops = [ln.split(" in ", 1)[1].split(";")[0].split() for ln in lines if ln.startswith("for ")]
    named = {tuple(w) for w in loops if w[0] == "jpki-va-signer"}
    assert named == {("jpki-va-signer", "jpki-va")}, loops
    docs = [d for d in yaml.safe_load_all(K8S_JPKI_VA.read_text()) if d]
    sets = {d["metadata"]["name"]: d for d in docs if d["kind"] == "StatefulSet"}
    pods = []
    for name in ("jpki-va-signer", "jpki-va"):
        spec = sets[name]["spec"]
        assert spec["template"]["spec"]["containers"][index]["name"] == "builder", name
        assert "updateStrategy" not in spec, name  # the default, RollingUpdate, put back
        pods += [f"{name}-{i}" for i in range(spec["replicas"])]
    [adopt_in] = [w for w in loops if w[0] == pods[0]]
    assert adopt_in == pods, (adopt_in, pods)
    deletes = [ln.split()[3:] for ln in lines if ln.startswith("kubectl delete pod ")]
    assert deletes == [pods, pods], deletes
    order = [ln.split()[1] for ln in lines if ln.startswith("kubectl ")]
    hold = next(i for i, ln in enumerate(lines) if "containers/" in ln)
    assert "rollout undo" in " ".join(lines[hold:]), "the hold is undone"
    assert lines[-2].endswith('{"spec":{"updateStrategy":{"type":"RollingUpdate"}}}\''), lines[-2]
    assert order.count("exec") == 1


def _shell_statements(block: str) -> list[list[str]]:
    """The simple commands of a docs shell block, in order, each `for V in ...; do ...; done`
    unrolled (``$V`` replaced by each item); `until ...; do ...; done` kept as one statement
    starting with ``until`` (what it waits on). Enough of sh for the docs' blocks."""

    def lex(line: str) -> list[str]:
        sh = shlex.shlex(line, posix=True, punctuation_chars=";|&")
        sh.whitespace_split = True
        sh.commentors = "#"
        return list(sh)

    def split(tokens: list[str]) -> list[list[str]]:
        out: list[list[str]] = [[]]
        for t in tokens:
            if t == ";":
                out.append([])
            else:
                out[-1].append(t)
        return [s for s in out if s]

    lines = iter(block.splitlines())
    out: list[list[str]] = []
    for line in lines:
        tokens = lex(line)
        if not tokens:
            continue
        if tokens[0] == "until":
            out.append(split(tokens)[0])
            continue
        if tokens[0] != "for":
            out += split(tokens)
            continue
        var, items = tokens[1], tokens[3 : tokens.index(";")]
        rest = tokens[tokens.index("do") + 1 :]
        body: list[str] = []
        if "done" in rest:
            body = rest[: rest.index("done")]
        else:
            body = rest
            for more in lines:
                if lex(more)[:1] == ["done"]:
                    break
                body += [*lex(more), ";"]
        for item in items:
            out += split([t.replace(f"${var}", item) for t in body])
    return out


@pytest.mark.unit
def test_the_kubernetes_adopt_steps_walk_an_api_server_as_it_answers() -> None:
    """docs/operations.md's Kubernetes steps of "A record stream made again", walked against
    a model of what the API server and the StatefulSet controller do with each command:

    - a StatefulSet whose manifest names no update strategy is stored with the default,
      ``{type: RollingUpdate, rollingUpdate: {partition: 0}}``; a patch making it
      ``OnDelete`` that leaves ``rollingUpdate`` there is refused ("spec.updateStrategy.
      rollingUpdate: Invalid value: ...: only allowed for updateStrategy 'RollingUpdate'",
      apps validation; kubernetes/kubernetes#100151): the patch must set it to null;
    - a deleted pod is made again by the controller afterwards: ``kubectl wait`` on a pod
      not made yet fails at once (NotFound), so the steps wait for the pods to be there
      first, and give ``--timeout`` (its default, 30 s, is shorter than a pod's start);
    - the adopt runs in pods made from the held template (their builder waits, the store
      written by no one); ``rollout undo`` takes the template of the revision before; at
      the end each StatefulSet is stored exactly as before the steps, and its pods are
      made from the shipped template."""
    import copy

    import yaml

    def defaulted(spec: dict[str, object]) -> dict[str, object]:
        spec = copy.deepcopy(spec)
        strategy = spec.setdefault("updateStrategy", {})
        assert isinstance(strategy, dict)
        strategy.setdefault("type", "RollingUpdate")
        if strategy["type"] == "RollingUpdate":
            strategy.setdefault("rollingUpdate", {})
            strategy["rollingUpdate"].setdefault("partition", 0)
        return spec

    def refused(name: str, spec: dict[str, object]) -> str | None:
        strategy = spec["updateStrategy"]
        assert isinstance(strategy, dict)
        if strategy["type"] == "OnDelete" and strategy.get("rollingUpdate") is not None:
            return (
                f'The StatefulSet "{name}" is invalid: spec.updateStrategy.rollingUpdate: '
                "Invalid value: ...: only allowed for updateStrategy 'RollingUpdate'"
            )
        return None

    def merge(target: object, patch: object) -> object:  # RFC 7386 (maps: as strategic)
        if not isinstance(patch, dict):
            return patch
        out = dict(target) if isinstance(target, dict) else {}
        for k, v in patch.items():
            if v is None:
                out.pop(k, None)
            else:
                out[k] = merge(out.get(k), v)
        return out

    text = OPERATIONS.read_text()
    section = text.split("### A record stream made again", 1)[1].split("\n### ", 1)[0]
    [block] = [b for b in re.findall(r"```sh\n(.*?)```", section, flags=re.S) if "kubectl" in b]
    docs = [d for d in yaml.safe_load_all(K8S_JPKI_VA.read_text()) if d]
    shipped = {
        d["metadata"]["name"]: defaulted(d["spec"]) for d in docs if d["kind"] == "StatefulSet"
    }
    stored = copy.deepcopy(shipped)
    history = {name: [copy.deepcopy(s["template"])] for name, s in stored.items()}
    pods = {f"{n}-{i}": copy.deepcopy(s["template"]) for n, s in stored.items()
            for i in range(s["replicas"])}  # fmt: skip
    every_pod = sorted(pods, key=lambda p: not p.startswith("jpki-va-signer-"))  # signer first
    made_later: dict[str, str] = {}  # deleted pods, the controller makes them again
    adopted_in: list[str] = []

    def statefulset_of(pod: str) -> str:
        return pod.rsplit("-", 1)[0]

    for cmd in _shell_statements(block):
        if cmd[0] == "until":
            assert cmd[1:4] == ["kubectl", "get", "pod"], cmd
            for pod in (w for w in cmd[4:] if w in made_later):
                pods[pod] = copy.deepcopy(stored[made_later.pop(pod)]["template"])
            continue
        if cmd[0] != "kubectl":
            continue
        verb = cmd[1]
        if verb == "patch":
            assert cmd[2] == "statefulset", cmd
            name, body = cmd[3], json.loads(cmd[cmd.index("-p") + 1])
            new = copy.deepcopy(stored[name])
            if "--type=json" in cmd:
                for op in body:
                    assert op["op"] == "replace", op
                    *path, last = op["path"].strip("/").split("/")
                    node: object = {"spec": new}
                    for p in path:
                        node = node[int(p)] if isinstance(node, list) else node[p]  # type: ignore[index]
                    assert isinstance(node, dict) and last in node, op  # replace: it is there
                    node[last] = op["value"]
            else:
                merged = merge({"spec": new}, body)
                assert isinstance(merged, dict)
                new = defaulted(merged["spec"])
            why = refused(name, new)
            assert why is None, f"{' '.join(cmd)}: {why}"
            if new["template"] != stored[name]["template"]:
                history[name].append(copy.deepcopy(new["template"]))
            stored[name] = new
        elif verb == "delete":
            assert cmd[2] == "pod", cmd
            for pod in cmd[3:]:
                del pods[pod]
                made_later[pod] = statefulset_of(pod)
        elif verb == "wait":
            assert any(w.startswith("--timeout=") for w in cmd), f"{cmd}: 30 s by default"
            for pod in (w.removeprefix("pod/") for w in cmd if w.startswith("pod/")):
                assert pod in pods, f"{' '.join(cmd)}: pods {pod!r} not found (not made yet)"
        elif verb == "exec":
            pod = cmd[2]
            assert pod in pods, f"{' '.join(cmd)}: pods {pod!r} not found"
            builder = pods[pod]["spec"]["containers"][0]
            assert builder["name"] == "builder" and builder["command"][0] == "sh", (
                f"{pod}: the adopt runs beside a builder that writes the store"
            )
            adopted_in.append(pod)
        elif verb == "rollout":
            assert cmd[2:4] == ["undo", "statefulset"], cmd
            name = cmd[4]
            stored[name]["template"] = copy.deepcopy(history[name][-2])
            history[name].append(copy.deepcopy(history[name][-2]))
        else:
            raise AssertionError(f"a kubectl command the model does not know: {cmd}")

    assert adopted_in == every_pod, adopted_in
    assert stored == shipped, "the StatefulSets are not as shipped after the steps"
    for pod in made_later:  # made again after the last delete: from the shipped template
        pods[pod] = copy.deepcopy(stored[statefulset_of(pod)]["template"])
    for pod, template in pods.items():
        assert template == shipped[statefulset_of(pod)]["template"], pod


@pytest.mark.unit
def test_the_kubernetes_bootstraps_read_the_configuration_their_builder_reads() -> None:
    """Each StatefulSet's `bootstrap` init container gets the snapshot with the builder's
    own configuration (`--config`, mounted from the same volume and key): the record
    stream's and the snapshot bucket's names are in it (`[stream] name`,
    `snapshot_bucket`), which the builder and the signer's `snapshot` container read. Without
    it `snapshot get` looks in the default bucket: a deployment naming its own finds none
    there (exit 4, its pods started empty) and a snapshot of a stream made again is not
    refused."""
    import yaml

    docs = [d for d in yaml.safe_load_all(K8S_JPKI_VA.read_text()) if d]
    for sts in (d for d in docs if d["kind"] == "StatefulSet"):
        pod = sts["spec"]["template"]["spec"]
        [boot] = pod["initContainers"]
        [builder] = [c for c in pod["containers"] if c["name"] == "builder"]
        [config] = [a.split("=", 1)[1] for a in builder["command"] if a.startswith("--config=")]
        words = shlex.split(boot["args"][0])
        get = words.index("get")
        assert words[get - 2 : get] == ["crlbuilder", "snapshot"], words
        rest = words[get + 1 : words.index("||", get)]
        assert rest[rest.index("--config") + 1] == config, (sts["metadata"]["name"], rest)
        [mount] = [m for m in builder["volumeMounts"] if m["mountPath"] == config]
        assert mount in boot["volumeMounts"], (sts["metadata"]["name"], mount)


def test_the_dashboards_seconds_since_lines_draw_nothing_for_never(tmp_path: Path) -> None:
    """A timestamp gauge at 0 means never (the stream never seen, the ledger never shipped,
    gathered or collected, the watch stream never seen): ``time() - 0`` drew about 1.8e9 s,
    which flattened every other line of its panel. Each duration line (``time() - ...``) is
    evaluated by promtool with every timestamp gauge of the contract at 0: no sample."""
    promtool = _tool("promtool", "prometheus")
    lines = [
        (where, re.sub(r"\$\{?\w+\}?", ".*", expr))
        for where, expr in _exprs(_dashboard())
        if re.match(r"\s*time\(\)\s*-", expr) and " bool " not in expr
    ]
    assert len(lines) >= 6, lines
    stamps = sorted(n for n in METRICS if n.endswith("_timestamp_seconds"))
    labels = 'job="jpki-va", instance="va1:8080", issuer="sign-card-g1", kind="full"'
    tests = {
        "rule_files": [],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [{"series": f"{n}{{{labels}}}", "values": "0x20"} for n in stamps],
                "promql_expr_test": [
                    {"expr": expr, "eval_time": "10m", "exp_samples": []} for _, expr in lines
                ],
            }
        ],
    }
    path = tmp_path / "never_test.yml"
    path.write_text(json.dumps(tests))
    out = subprocess.run(
        [promtool, "test", "rules", str(path)],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stdout + out.stderr
