"""The yearly report (報告書, Act §41, Ord §72): the ledger's counts for one year, published.

Ord §72(1) says what the report holds, for every kind of provision
(署名用電子証明書失効情報等, 対応証明書の発行の番号, 利用者証明用電子証明書失効情報等):
the recipient (提供先), the year-month of provision (提供を行った年月), how many
(件数) and by which method (提供の方法). Ord §72(2) has it published two ways: kept at
the 機構's office on view to anyone for five years (item 1), and by Internet or other means
(item 2; no period set: ``/reports/`` serves every year the ledger holds). This module owns turning a
`responder.ledger.Ledger` into a `Report` (`build_report`) and the three
renderings: `to_json`, `to_csv` and `to_html` (a self-contained page: Japanese
headings with English, a chart of monthly volumes per kind as inline SVG, no
JavaScript and no external assets, so it renders offline). It also owns
``responder report`` (`add_cli`) and the helpers the app uses to serve
``/reports/YYYY`` (`parse_report_path`, `render_year`, and `ReportCache`: each
rendering at most once per interval, however many requests come).

The report only ever sees counts keyed by party id, kind, method and month:
no personal data and no serial numbers can reach it. Party names come from the
registry and are escaped wherever they are written (HTML, SVG, CSV formulas).
Certificates issued (発行件数, an item of the 帳簿, Ord §71(1)) are added when the
caller passes them, computed by `responder.ledger.issuance_counts` (a full scan
of the status store: about two seconds per million certificates).
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import functools
import html
import io
import math
import re
import sys
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import KW_ONLY, dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Final, Literal

import msgspec

from crlbuilder import atomicfile
from crlbuilder.model import Family
from crlbuilder.rules import JST
from responder.ledger import (
    GatheringState,
    Ledger,
    LedgerError,
    Method,
    Service,
    issuance_counts,
    peek,
)
from responder.registry.schema import LegacyPartyEntry, RegistryError, parse_registry
from responder.registry.vocabulary import Title

__all__ = [
    "CONTENT_TYPES",
    "REPORT_FILE_MODE",
    "YEARS",
    "AsOf",
    "Format",
    "ProvisionLine",
    "RecipientReport",
    "Report",
    "ReportCache",
    "Scope",
    "as_of",
    "build_report",
    "ledger_as_of",
    "load_registry_names",
    "parse_report_path",
    "render",
    "render_ledger_dir",
    "render_year",
    "report_command",
    "to_csv",
    "to_html",
    "to_json",
]

Format = Literal["html", "csv", "json"]
REPORT_FILE_MODE: Final = 0o600
"""The mode of every report file ``responder report --out`` writes, whatever ``--registry``
says: a report names parties (or, without ``--registry``, their ids) and counts what each
was provided. The 機構 publishes its report (公表, Act §41) by its own act, at
``/reports/`` or by a copy, not by leaving a draft readable by every account of the host;
and a group's report names its members (署名確認者, Act §20(1)), natural persons among
them, also when rendered without ``--registry`` (by their ids then). Written 0600 for the
account that made it (readable by no group: the service account's group is the
responder's, which has no use for it)."""

CONTENT_TYPES: Final[dict[str, bytes]] = {
    "html": b"text/html; charset=utf-8",
    "csv": b"text/csv; charset=utf-8; header=present",
    "json": b"application/json",
}

FAMILY_JA: Final[dict[str, str]] = {
    Family.SIGN_CARD.value: "個人番号カード用署名用電子証明書",
    Family.SIGN_MOBILE.value: "移動端末設備用署名用電子証明書",
    Family.AUTH_CARD.value: "個人番号カード用利用者証明用電子証明書",
    Family.AUTH_MOBILE.value: "移動端末設備用利用者証明用電子証明書",
}

_COLOURS: Final[dict[Service, str]] = dict(
    zip(
        Service,
        # Okabe-Ito: distinguishable with the common colour-vision deficiencies
        (
            "#0072B2",
            "#E69F00",
            "#009E73",
            "#CC79A7",
            "#56B4E9",
            "#D55E00",
            "#F0E442",
            "#000000",
            "#999999",
            "#882255",  # Tol's wine, beyond Okabe-Ito's eight
        ),
        strict=True,
    )
)


class ProvisionLine(msgspec.Struct, frozen=True):
    """Provisions of one kind, by one method, to one recipient in one month."""

    month: str
    """提供を行った年月, ``"YYYY-MM"`` (local, JST)."""
    service: Service
    """The kind of provision."""
    method: Method
    """提供の方法."""
    count: int
    """件数."""


class RecipientReport(msgspec.Struct, frozen=True):
    """One recipient (提供先) and what it received in the year."""

    party: str
    """The registry id."""
    name: str
    """The notified name (届出の名称) from the registry; the id when the registry lacks it."""
    registered: bool
    """False when the registry given to `build_report` does not list the party (any more)."""
    lines: list[ProvisionLine]
    total: int


Scope = Literal["node", "service"]


class AsOf(msgspec.Struct, frozen=True, kw_only=True):
    """How current a report's counts are: what it says in every format (`as_of`)."""

    scope: Scope
    """``node``: this node's ledger, collected from its workers' files; ``service``: every
    node's counts, gathered from the ledger stream (several nodes, `responder.ledgerstream`)."""
    at: datetime | None
    """``node``: when the ledger was last collected; ``service``: when the last gathering
    that succeeded (this node's shipment, then every node's counts read) started. None:
    none yet."""
    failing: int
    """``service``: gatherings that failed since ``at`` (0 on a node alone)."""
    complete: bool
    """False when counts may be missing: nothing collected or gathered yet, or the gatherings
    since ``at`` failed (every rendering then says so, as for refused ledger files)."""


def as_of(scope: Scope, collected_at: int, gathering: GatheringState) -> AsOf:
    """What a report read from a ledger is as of (sans-I/O): ``collected_at`` and
    ``gathering`` as the ledger's meta table keeps them (`Ledger.collected_at`,
    `Ledger.gathering_state`)."""
    if scope == "node":
        at = collected_at
        failing = 0
    else:
        at = gathering.gathered_at
        failing = gathering.failing
    when = datetime.fromtimestamp(at, UTC) if at > 0 else None
    return AsOf(scope=scope, at=when, failing=failing, complete=when is not None and not failing)


def ledger_as_of(ledger: Ledger | None, scope: Scope) -> AsOf:
    """`as_of` of ``ledger`` (None: there is no ledger yet, nothing collected)."""
    if ledger is None:
        return as_of(scope, 0, GatheringState(gathered_at=0, failures=0, failing=0))
    return as_of(scope, ledger.collected_at(), ledger.gathering_state())


class Report(msgspec.Struct, frozen=True, kw_only=True):
    """The report of one calendar year (local months January to December)."""

    year: int
    generated_at: datetime
    recipients: list[RecipientReport]
    """Sorted by party id; only parties that received something."""
    monthly: dict[str, list[int]]
    """Per kind of provision (service value) with any count in the year: 12 monthly totals."""
    by_service_method: dict[str, dict[str, int]]
    """Year totals: service value -> method value -> count."""
    total: int
    issuance: dict[str, dict[str, int]] | None = None
    """発行件数 per family and month (``"YYYY-MM"``), when given."""
    refused_files: int = 0
    """Worker files of the ledger the collection before this report refused (damaged,
    truncated, or a foreign ``*.ledger`` file): whatever they count is missing, so the figures
    may be too low; every rendering says so when not 0."""
    as_of: AsOf | None = None
    """How current the counts are (None: not said, a report made from a ledger just
    collected, the caller's own)."""


def _months(year: int) -> list[str]:
    return [f"{year:04d}-{m:02d}" for m in range(1, 13)]


def build_report(
    ledger: Ledger | None,
    year: int,
    *,
    registry_names: dict[str, str],
    issuance_counts: dict[str, dict[str, int]] | None,
    generated_at: datetime | None = None,
    refused_files: int = 0,
    as_of: AsOf | None = None,
) -> Report:
    """The report (報告書) of ``year`` from what ``ledger`` has collected.

    ``registry_names`` maps party ids to their notified names (``{p.id: p.name
    for p in registry.parties.values()}`` or `load_registry_names`).
    ``issuance_counts`` is ``family -> "YYYY-MM" -> count`` for this year
    (`responder.ledger.issuance_counts`), or None to leave 発行件数 out; a month
    of another year or an unknown family raises `ValueError`. ``refused_files``: the worker
    files the collection refused (`responder.ledger.CollectResult.refused`), said on the report.
    ``ledger`` None: there is none yet (nothing collected), no counts. ``as_of``: how current
    the counts are, said on the report (`ledger_as_of`).
    """
    months = _months(year)
    totals = (
        ledger.totals(
            date(year, 1, 1), date(year, 12, 31), by=("party", "month", "service", "method")
        )
        if ledger is not None
        else {}
    )
    lines: dict[str, list[ProvisionLine]] = {}
    monthly: dict[str, list[int]] = {}
    by_sm: dict[str, dict[str, int]] = {}
    for (party, month, service, method), count in totals.items():
        line = ProvisionLine(month, Service(service), Method(method), count)
        lines.setdefault(party, []).append(line)
        monthly.setdefault(service, [0] * 12)[months.index(month)] += count
        sm = by_sm.setdefault(service, {})
        sm[method] = sm.get(method, 0) + count
    recipients = [
        RecipientReport(
            party=party,
            name=registry_names.get(party, party),
            registered=party in registry_names,
            lines=sorted(ls, key=lambda x: (x.month, _order(x.service), x.method.value)),
            total=sum(x.count for x in ls),
        )
        for party, ls in sorted(lines.items())
    ]
    issuance = None
    if issuance_counts is not None:
        issuance = {}
        for family, per_month in issuance_counts.items():
            if family not in FAMILY_JA:
                raise ValueError(f"issuance counts: unknown family {family!r}")
            for m in per_month:
                if m not in months:
                    raise ValueError(f"issuance counts: month {m!r} is not in {year}")
            issuance[family] = dict(sorted(per_month.items()))
    return Report(
        year=year,
        generated_at=generated_at or datetime.now(UTC).replace(microsecond=0),
        recipients=recipients,
        monthly={s.value: monthly[s.value] for s in Service if s.value in monthly},
        by_service_method={
            s.value: dict(sorted(by_sm[s.value].items())) for s in Service if s.value in by_sm
        },
        total=sum(r.total for r in recipients),
        issuance=issuance,
        refused_files=refused_files,
        as_of=as_of,
    )


def _order(s: Service) -> int:
    return list(Service).index(s)


# --- JSON ------------------------------------------------------------------------------


def to_json(report: Report) -> bytes:
    """The report as JSON: the `Report` fields plus a legend of kinds, methods and families."""
    return msgspec.json.encode(
        {
            "title": "報告書 / Annual report (Act §41, Ord §72)",
            **msgspec.structs.asdict(report),
            "legend": {
                "services": {s.value: {"ja": s.ja, "article": s.article} for s in Service},
                "methods": {m.value: {"ja": m.ja} for m in Method},
                "families": FAMILY_JA,
            },
        }
    )


# --- CSV -------------------------------------------------------------------------------

CSV_COLUMNS: Final = (
    "kind",
    "recipient",
    "recipient_name",
    "month",
    "item",
    "item_ja",
    "method",
    "count",
)
"""``kind`` is ``provision`` (item: the service), ``issuance`` (item: the family),
``as-of`` (how current the counts are: item ``collected-on-node`` or
``gathered-from-cluster``, count the instant, ISO 8601 UTC, empty when none yet), or
``incomplete`` (last, only when counts may be missing: item ``refused-ledger-files``, count
how many; ``not-yet-collected``, ``not-yet-gathered``; ``cluster-gathering-failing``, count
the gatherings that failed since the instant of ``as-of``)."""


def _cell(value: str) -> str:
    """A text cell a spreadsheet will not run as a formula (OWASP CSV injection)."""
    return "'" + value if value[:1] in ("=", "+", "-", "@", "\t", "\r") else value


def to_csv(report: Report) -> str:
    """The report as CSV (RFC 4180, CRLF), one row per recipient × month × kind × method."""
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\r\n")
    w.writerow(CSV_COLUMNS)
    for r in report.recipients:
        for x in r.lines:
            w.writerow(
                [
                    "provision",
                    r.party,
                    _cell(r.name),
                    x.month,
                    x.service.value,
                    x.service.ja,
                    x.method.value,
                    x.count,
                ]
            )
    for family, per_month in (report.issuance or {}).items():
        for month, count in per_month.items():
            w.writerow(["issuance", "", "", month, family, FAMILY_JA[family], "", count])
    a = report.as_of
    if a is not None:
        item, item_ja = _AS_OF_ITEMS[a.scope]
        w.writerow(["as-of", "", "", "", item, item_ja, "",
                    "" if a.at is None else a.at.isoformat()])  # fmt: skip
    if report.refused_files:
        w.writerow(["incomplete", "", "", "", "refused-ledger-files", _INCOMPLETE_JA, "",
                    report.refused_files])  # fmt: skip
    if a is not None and not a.complete:
        if a.at is None:
            item, item_ja = _NOT_YET[a.scope]
        else:
            item, item_ja = "cluster-gathering-failing", _GATHERING_FAILING_JA
        w.writerow(["incomplete", "", "", "", item, item_ja, "", a.failing])
    return out.getvalue()


_INCOMPLETE_JA: Final = "読めなかった帳簿ファイル(件数が不足する可能性)"
_AS_OF_ITEMS: Final[dict[str, tuple[str, str]]] = {
    "node": ("collected-on-node", "このノードの帳簿を集計した日時"),
    "service": ("gathered-from-cluster", "全ノードの帳簿をクラスタから集計した日時"),
}
_NOT_YET: Final[dict[str, tuple[str, str]]] = {
    "node": ("not-yet-collected", "帳簿の集計前(件数が不足する可能性)"),
    "service": ("not-yet-gathered", "クラスタからの集計前(件数が不足する可能性)"),
}
_GATHERING_FAILING_JA: Final = "クラスタからの集計の失敗(その後の件数が不足する可能性)"


# --- HTML ------------------------------------------------------------------------------


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _n(value: int) -> str:
    return f"{value:,}"


_CSS: Final = """
body { font-family: "Noto Sans CJK JP", "Hiragino Sans", "Yu Gothic", sans-serif;
       margin: 2em auto; max-width: 1100px; padding: 0 1em; color: #222; background: #fff; }
h1 { border-bottom: 3px solid #0072B2; padding-bottom: .3em; }
h2 { margin-top: 2em; border-left: 6px solid #0072B2; padding-left: .5em; }
table { border-collapse: collapse; margin: .5em 0 1.5em; }
th, td { border: 1px solid #bbb; padding: .25em .6em; }
th { background: #eef3f8; text-align: left; }
td.n { text-align: right; font-variant-numeric: tabular-nums; }
tr.sum td { font-weight: bold; background: #f6f6f6; }
figure { margin: 0; }
svg { max-width: 100%; height: auto; }
.note { color: #555; font-size: .9em; }
.incomplete { border: 2px solid #D55E00; padding: .5em 1em; background: #fff4ec; }
"""


def to_html(report: Report) -> str:
    """The report as one self-contained HTML page (also well-formed XML)."""
    y = report.year
    parts = [
        "<!DOCTYPE html>",
        '<html lang="ja">',
        "<head>",
        '<meta charset="utf-8"/>',
        '<meta name="viewport" content="width=device-width, initial-scale=1"/>',
        f"<title>報告書 / Annual report {y}</title>",
        f"<style>{_CSS}</style>",
        "</head>",
        "<body>",
        f"<h1>報告書 / Annual report: {y}年 / {y}</h1>",
        *_as_of_html(report.as_of),
        *_incomplete(report),
        '<p class="note">署名用電子証明書失効情報等、対応証明書の発行の番号及び'
        "利用者証明用電子証明書失効情報等の提供の状況 / Provision of revocation information "
        "and corresponding serial numbers: 法第41条、施行規則第72条 (Act §41, Ord §72).</p>",
        "<h2>概要 / Summary</h2>",
        "<table>",
        f"<tr><th>対象期間 / Period</th><td>{y}年1月 - {y}年12月 (JST)</td></tr>",
        f'<tr><th>提供先の数 / Recipients</th><td class="n">{_n(len(report.recipients))}</td></tr>',
        f'<tr><th>件数の合計 / Total provisions</th><td class="n">{_n(report.total)}</td></tr>',
        "</table>",
        "<h2>月別・提供の種類別の件数 / Monthly provisions by kind</h2>",
        "<figure>",
        _svg_chart(report),
        f'<figcaption class="note">{y}年の月別件数 / Provisions per month in {y}, '
        "per kind of provision.</figcaption>",
        "</figure>",
        "<h2>提供の種類別・方法別の件数 / Provisions by kind and method</h2>",
        _totals_table(report),
        "<h2>提供先別の提供状況 / Provisions per recipient</h2>",
    ]
    if not report.recipients:
        parts.append("<p>提供なし / No provisions in this year.</p>")
    for r in report.recipients:
        parts.append(_recipient_table(r))
    if report.issuance is not None:
        parts += ["<h2>発行件数 / Certificates issued (Ord §71(1))</h2>", _issuance_table(report)]
    parts += [
        '<p class="note">この報告書は件数のみを記載し、個人情報及び発行の番号を含みません。 / '
        "This report holds counts only: no personal data and no serial numbers.<br/>"
        f"作成日時 / Generated: {_e(report.generated_at.isoformat())}</p>",
        "</body>",
        "</html>",
        "",
    ]
    return "\n".join(parts)


def _incomplete(report: Report) -> list[str]:
    if not report.refused_files:
        return []
    n = _n(report.refused_files)
    return [
        '<p class="incomplete"><strong>不完全 / Incomplete:</strong> '
        f"帳簿のファイル{n}件を読めなかったため、件数は実際より少ない可能性があります。 / "
        f"{n} file(s) of the ledger could not be read: the counts below may be too low.</p>"
    ]


def _when(at: datetime) -> str:
    """An instant as UTC and JST, to the second."""
    utc = at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    return f"{utc} ({at.astimezone(JST).strftime('%Y-%m-%d %H:%M:%S JST')})"


def _as_of_html(a: AsOf | None) -> list[str]:
    if a is None:
        return []
    if a.at is None:
        what = (
            ("帳簿はまだ集計されていません", "the ledger has not been collected yet")
            if a.scope == "node"
            else ("クラスタからまだ集計していません", "not gathered from the cluster yet")
        )
        return [
            '<p class="incomplete"><strong>不完全 / Incomplete:</strong> '
            f"{what[0]}。件数は実際より少ない可能性があります。 / "
            f"{what[1]}: the counts below may be too low.</p>"
        ]
    when = _e(_when(a.at))
    if a.scope == "node":
        said = f"集計時点 / Counts as of: {when}(この装置の帳簿 / this appliance's ledger)"
    else:
        said = (
            f"集計時点 / Counts as of: {when}(全ノードの帳簿をクラスタから集計 / "
            "every node's ledger, gathered from the cluster)"
        )
    out = [f'<p class="note">{said}</p>']
    if a.failing:
        n = _n(a.failing)
        out.append(
            '<p class="incomplete"><strong>不完全 / Incomplete:</strong> '
            f"その後のクラスタからの集計に{n}回失敗したため、{when}以降の件数は含まれていない"
            f"可能性があります。 / The {n} gathering(s) from the cluster since then failed: "
            f"counts since {when} may be missing.</p>"
        )
    return out


def _kind_cell(s: Service) -> str:
    return f"{_e(s.ja)}<br/><small>{_e(s.value)} ({_e(s.article)})</small>"


def _method_cell(m: Method) -> str:
    return f"{_e(m.ja)} <small>({_e(m.value)})</small>"


def _totals_table(report: Report) -> str:
    rows = [
        "<table>",
        "<tr><th>提供の種類 / Kind of provision</th><th>提供の方法 / Method</th>"
        "<th>件数 / Count</th></tr>",
    ]
    for svc, per_method in report.by_service_method.items():
        for method, count in per_method.items():
            rows.append(
                f"<tr><td>{_kind_cell(Service(svc))}</td><td>{_method_cell(Method(method))}</td>"
                f'<td class="n">{_n(count)}</td></tr>'
            )
    rows.append(
        f'<tr class="sum"><td colspan="2">合計 / Total</td><td class="n">{_n(report.total)}</td></tr>'
    )
    rows.append("</table>")
    return "\n".join(rows)


def _recipient_table(r: RecipientReport) -> str:
    note = "" if r.registered else " <small>(登録簿にない / not in the registry)</small>"
    rows = [
        f'<h3 id="party-{_e(r.party)}">提供先 / Recipient: {_e(r.name)} '
        f"<small>({_e(r.party)})</small>{note}</h3>",
        "<table>",
        "<tr><th>提供を行った年月 / Month</th><th>提供の種類 / Kind of provision</th>"
        "<th>提供の方法 / Method</th><th>件数 / Count</th></tr>",
    ]
    for x in r.lines:
        rows.append(
            f"<tr><td>{_e(x.month)}</td><td>{_kind_cell(x.service)}</td>"
            f'<td>{_method_cell(x.method)}</td><td class="n">{_n(x.count)}</td></tr>'
        )
    rows.append(
        f'<tr class="sum"><td colspan="3">合計 / Total</td><td class="n">{_n(r.total)}</td></tr>'
    )
    rows.append("</table>")
    return "\n".join(rows)


def _issuance_table(report: Report) -> str:
    months = _months(report.year)
    issuance = report.issuance or {}
    head = "".join(f"<th>{int(m[5:])}月</th>" for m in months)
    rows = [
        "<table>",
        f"<tr><th>種類 / Family</th>{head}<th>合計 / Total</th></tr>",
    ]
    for family, per_month in issuance.items():
        cells = "".join(f'<td class="n">{_n(per_month.get(m, 0))}</td>' for m in months)
        rows.append(
            f"<tr><td>{_e(FAMILY_JA[family])}<br/><small>{_e(family)}</small></td>{cells}"
            f'<td class="n">{_n(sum(per_month.values()))}</td></tr>'
        )
    rows.append("</table>")
    return "\n".join(rows)


def _nice_ceiling(value: int) -> tuple[int, int]:
    """(top of the axis, step) for a maximum ``value``: 5 or so steps of 1, 2 or 5 × 10^k."""
    raw = max(1.0, value / 5)
    exp = 10 ** math.floor(math.log10(raw))
    step = next(m * exp for m in (1, 2, 5, 10) if m * exp >= raw)
    step = max(1, int(step))
    return step * math.ceil(max(value, 1) / step), step


def _svg_chart(report: Report) -> str:
    """A grouped bar chart: one bar per month per kind with provisions (height 0 for none)."""
    width, left, right, top, plot_h = 1000, 80, 20, 20, 260
    services = [Service(s) for s in report.monthly]
    legend_rows = math.ceil(len(services) / 3)
    height = top + plot_h + 40 + 22 * legend_rows + 10
    plot_w = width - left - right
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-labelledby="chart-title" '
        'font-family="sans-serif" font-size="12">',
        f'<title id="chart-title">月別提供件数 / Monthly provisions {report.year}</title>',
        f'<rect x="0" y="0" width="{width}" height="{height}" fill="#ffffff"/>',
    ]
    peak = max((v for vals in report.monthly.values() for v in vals), default=0)
    axis_top, step = _nice_ceiling(peak)
    base = top + plot_h
    for tick in range(0, axis_top + 1, step):
        ty = base - plot_h * tick / axis_top
        out.append(
            f'<line x1="{left}" y1="{ty:.1f}" x2="{width - right}" y2="{ty:.1f}" '
            'stroke="#dddddd" stroke-width="1"/>'
        )
        out.append(
            f'<text x="{left - 6}" y="{ty + 4:.1f}" text-anchor="end" fill="#333333">'
            f"{_n(tick)}</text>"
        )
    group = plot_w / 12
    bar_w = group * 0.8 / max(1, len(services))
    for mi, month in enumerate(_months(report.year)):
        gx = left + mi * group
        out.append(
            f'<text x="{gx + group / 2:.1f}" y="{base + 18}" text-anchor="middle" '
            f'fill="#333333">{mi + 1}月</text>'
        )
        for si, svc in enumerate(services):
            value = report.monthly[svc.value][mi]
            h = plot_h * value / axis_top
            out.append(
                f'<rect class="bar" data-service="{_e(svc.value)}" data-month="{month}" '
                f'data-count="{value}" x="{gx + group * 0.1 + si * bar_w:.1f}" '
                f'y="{base - h:.1f}" width="{bar_w:.1f}" height="{h:.1f}" '
                f'fill="{_COLOURS[svc]}"><title>{month} {_e(svc.ja)} ({_e(svc.value)}): '
                f"{_n(value)}</title></rect>"
            )
    out.append(f'<line x1="{left}" y1="{base}" x2="{width - right}" y2="{base}" stroke="#333333"/>')
    if not services:
        out.append(
            f'<text x="{left + plot_w / 2:.1f}" y="{top + plot_h / 2:.1f}" '
            'text-anchor="middle" fill="#666666">提供なし / No provisions</text>'
        )
    for i, svc in enumerate(services):
        lx = left + (i % 3) * (plot_w / 3)
        ly = base + 40 + (i // 3) * 22
        out.append(
            f'<rect class="legend" x="{lx:.1f}" y="{ly - 10}" width="12" height="12" '
            f'fill="{_COLOURS[svc]}"/>'
            f'<text x="{lx + 18:.1f}" y="{ly}" fill="#333333">{_e(svc.ja)} '
            f"({_e(svc.value)})</text>"
        )
    out.append("</svg>")
    return "\n".join(out)


# --- serving and the command line --------------------------------------------------------


def render(report: Report, fmt: Format) -> tuple[bytes, bytes]:
    """(body, Content-Type) of ``report`` in ``fmt``."""
    if fmt == "json":
        body = to_json(report)
    elif fmt == "csv":
        body = to_csv(report).encode("utf-8")
    elif fmt == "html":
        body = to_html(report).encode("utf-8")
    else:
        raise ValueError(f"unknown report format {fmt!r}")
    return body, CONTENT_TYPES[fmt]


_PATH_RE: Final = re.compile(rb"/reports/(\d{4})(?:\.(html|csv|json))?")

YEARS: Final = range(1970, date.max.year + 1)
"""The years a report can be asked for: the ledger counts days from 1970-01-01
(`responder.ledger`, an unsigned day number) and dates end in 9999. Any other
year is no report (404), never an error of the responder."""


def parse_report_path(path: bytes) -> tuple[int, Format] | None:
    """``/reports/2025`` (HTML), ``/reports/2025.csv`` or ``.json`` -> (year, format); else None.

    None (the app answers 404) for anything else, including a year outside `YEARS`.
    """
    m = _PATH_RE.fullmatch(path)
    if m is None or int(m.group(1)) not in YEARS:
        return None
    fmt: Format = "html"
    if m.group(2) == b"csv":
        fmt = "csv"
    elif m.group(2) == b"json":
        fmt = "json"
    return int(m.group(1)), fmt


def render_year(
    ledger: Ledger | None,
    year: int,
    fmt: Format,
    *,
    registry_names: dict[str, str],
    issuance_counts: dict[str, dict[str, int]] | None = None,
    refused_files: int = 0,
    as_of: AsOf | None = None,
) -> tuple[bytes, bytes]:
    """What the app answers for ``/reports/YYYY[.fmt]``: (body, Content-Type).

    Reads what the ledger has collected (worker 0 collects; open the ledger
    with ``Ledger.open(dir, readonly=True)`` in a worker). It queries sqlite:
    run it in the app's executor, not on the event loop.
    """
    report = build_report(
        ledger, year, registry_names=registry_names, issuance_counts=issuance_counts,
        refused_files=refused_files, as_of=as_of,
    )  # fmt: skip
    return render(report, fmt)


def render_ledger_dir(
    directory: Path, year: int, fmt: Format, *, registry_names: dict[str, str], scope: Scope
) -> tuple[bytes, bytes]:
    """`render_year` of the ledger of ``directory`` as it stands, read-only: no collection,
    no exchange with the ledger stream (those are worker 0's collection cycle's), so that a
    request of anyone for the public report writes nothing and connects nowhere. ``scope``
    ``service``: every node's counts, from the service ledger as last gathered. The report
    says how current it is (`ledger_as_of`), and how many worker files the last collection
    refused; with no ledger yet, a report of no counts that says it is incomplete."""

    def read(ledger: Ledger | None) -> tuple[bytes, bytes]:
        refused = 0
        if ledger is not None:
            if scope == "service":
                ledger.view = "service_ledger"
            refused = ledger.refused_files()
        return render_year(
            ledger, year, fmt, registry_names=registry_names, refused_files=refused,
            as_of=ledger_as_of(ledger, scope),
        )  # fmt: skip

    got = peek(directory, read)
    return read(None) if got is None else got


_Key = tuple[int, Format]


@dataclass(eq=False)
class ReportCache:
    """The rendered answers of ``/reports/YYYY[.fmt]``, so that a flood of requests for the
    public report cannot keep a worker rendering (issue 10, item 5: the public routes must
    not starve the registered parties).

    Per (year, format), a render runs at most once per ``max_age`` seconds: requests
    within it get the bytes rendered last (`fresh`, on the event loop, no render), and
    requests that come while a render runs wait for that same render (`get`). Renders
    run in ``executor``; at most ``max_renders`` wait or run at once, and `get` answers
    None for a request that would need one more (the app says 429 and Retry-After). At
    most ``max_entries`` answers are kept (least recently asked for goes first), so
    asking for many years costs renders, bounded as said, never memory. An answer is at
    most ``max_age`` plus one render's time old.
    """

    render: Callable[[int, Format], tuple[bytes, bytes]]
    executor: Executor
    _: KW_ONLY
    max_age: float
    max_entries: int = 32
    max_renders: int = 4
    clock: Callable[[], float] = time.monotonic
    renders: int = 0
    """Renders started since the cache was made."""
    _done: OrderedDict[_Key, tuple[float, tuple[bytes, bytes]]] = field(
        default_factory=OrderedDict, init=False, repr=False
    )
    _running: dict[_Key, asyncio.Future[tuple[bytes, bytes]]] = field(
        default_factory=dict, init=False, repr=False
    )

    def fresh(self, year: int, fmt: Format) -> tuple[bytes, bytes] | None:
        """(body, Content-Type) rendered less than ``max_age`` ago, else None."""
        key = (year, fmt)
        done = self._done.get(key)
        if done is None or not 0 <= self.clock() - done[0] < self.max_age:
            return None
        self._done.move_to_end(key)
        return done[1]

    async def get(self, year: int, fmt: Format) -> tuple[bytes, bytes] | None:
        """(body, Content-Type), rendered now or by the render already running; None when
        ``max_renders`` renders wait or run. Call it on the event loop's thread."""
        hit = self.fresh(year, fmt)
        if hit is not None:
            return hit
        key = (year, fmt)
        running = self._running.get(key)
        if running is None:
            if len(self._running) >= self.max_renders:
                return None
            self.renders += 1
            loop = asyncio.get_running_loop()
            running = loop.run_in_executor(self.executor, self.render, year, fmt)
            self._running[key] = running
            running.add_done_callback(functools.partial(self._finished, key))
        # shielded: a client that goes away does not cancel the render the others wait for
        return await asyncio.shield(running)

    def _finished(self, key: _Key, done: asyncio.Future[tuple[bytes, bytes]]) -> None:
        del self._running[key]
        if done.cancelled() or done.exception() is not None:
            return  # not kept: the waiting requests get the failure, the next one renders
        self._done[key] = (self.clock(), done.result())
        self._done.move_to_end(key)
        while len(self._done) > self.max_entries:
            self._done.popitem(last=False)


def load_registry_names(path: Path) -> dict[str, str]:
    """Party id -> notified name (氏名又は名称) from a registry TOML; certificates are not read.

    With a loaded `responder.registry.Registry`, the same is
    ``{p.id: p.name for p in registry.parties.values()}``.
    """
    return _read_registry(path)[0]


def _read_registry(path: Path) -> tuple[dict[str, str], bool]:
    """`load_registry_names`, and whether the registry names a 署名確認者 (a group's member,
    Act §20(1)): a group appliance's registry, whose recipients include natural persons."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise RegistryError(f"{path}: cannot read the registry: {e.strerror}") from None
    except UnicodeDecodeError:  # as `Registry.load` says it
        raise RegistryError(f"{path}: not UTF-8 text") from None
    parties = parse_registry(text, source=str(path)).parties
    members = any(
        Title.SIGNATURE_CONFIRMER in p.titles
        if isinstance(p, LegacyPartyEntry)
        else any(t.TITLE is Title.SIGNATURE_CONFIRMER for t in p.title)
        for p in parties
    )
    return {p.id: p.name for p in parties}, members


def report_command(args: argparse.Namespace) -> int:
    """``responder report`` (its flags: `responder.cli`): the exit code."""
    err: Callable[[str], None] = lambda msg: print(f"responder report: {msg}", file=sys.stderr)  # noqa: E731
    year: int = args.year
    if year not in YEARS:
        err(f"error: --year {year} is not a plausible year")
        return 2
    if not args.ledger.is_dir():  # a mistyped path: no empty ledger made, no report of zeros
        err(f"error: {args.ledger}: no ledger directory here (the responder's [ledger] dir)")
        return 2
    try:
        names, members = _read_registry(args.registry) if args.registry else ({}, False)
        ledger = Ledger.open(args.ledger, readonly=args.no_collect)
    except (LedgerError, RegistryError) as e:
        err(f"error: {e}")
        return 2
    with ledger:
        refused_files = ledger.refused_files()  # --no-collect: as the last collection saw
        if not args.no_collect:
            result = ledger.collect()
            refused_files = len(result.refused)
            for refused in result.refused:
                err(f"refused {refused.path}: {refused.reason}")
            if result.refused and not args.allow_refused:
                err("error: the report would miss the refused files' counts (see --allow-refused)")
                return 1
        if args.nats:
            if args.no_collect:
                err("error: --nats ships and gathers counts; it cannot be --no-collect")
                return 2
            from crlbuilder.jetstream import ClusterError
            from responder.config import ClusterConfig
            from responder.ledgerstream import exchange

            # the name this ledger ships as (its responder's [cluster] node), not the host
            # name: shipped under two names, every counter would count twice
            node = args.node or ledger.shipped_as() or ""
            try:
                exchange(ledger, ClusterConfig(nats=args.nats, node=node,
                                               ledger_stream=args.ledger_stream))  # fmt: skip
            except (ClusterError, ValueError) as e:
                err(f"error: the service's ledger: {e}")
                return 1
            ledger.view = "service_ledger"
        issued = None
        if args.store is not None:
            from crlbuilder.store.format import StoreFormatError
            from crlbuilder.store.lmdbstore import Store

            try:
                store = Store.open(args.store, readonly=True)
            except StoreFormatError as e:
                err(f"error: {e}")
                return 2
            try:
                issued = issuance_counts(store, date(year, 1, 1), date(year, 12, 31))
            except LedgerError as e:
                err(f"error: {e}")
                return 2
            finally:
                store.close()
        report = build_report(
            ledger, year, registry_names=names, issuance_counts=issued,
            refused_files=refused_files,
            as_of=ledger_as_of(ledger, "service" if args.nats else "node"),
        )  # fmt: skip
    body, _ = render(report, args.format)
    if args.out is None:
        sys.stdout.buffer.write(body)
        sys.stdout.flush()
        return 0
    out: Path = args.out
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        atomicfile.sweep_own(out, now=time.time())  # an earlier run's, crashed
        atomicfile.write_whole(out, body, REPORT_FILE_MODE)
    except OSError as e:
        err(f"error: {out}: cannot write the report ({e.strerror})")
        return 2
    err(f"{out}: {len(report.recipients)} recipients, {report.total} provisions in {year}")
    if members:
        err(f"{out}: written 0600: it names 署名確認者 (a group's members), not a public report")
    return 0
