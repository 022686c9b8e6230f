"""The yearly report (報告書): numbers equal the ledger, HTML/SVG well-formed and escaped, CLI."""

from __future__ import annotations

import csv
import io
import os
import re
import shutil
import stat
import struct
import subprocess
import xml.etree.ElementTree as ET
import zlib
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, date, datetime
from html.parser import HTMLParser
from pathlib import Path

import msgspec
import pytest

from crlbuilder.rules import JST_OFFSET
from responder.ledger import GatheringState, Ledger, LedgerWriter, Method, Service
from responder.report import (
    CSV_COLUMNS,
    REPORT_FILE_MODE,
    AsOf,
    Report,
    as_of,
    build_report,
    load_registry_names,
    parse_report_path,
    render,
    render_ledger_dir,
    render_year,
    to_csv,
    to_html,
    to_json,
)
from tests.test_atomicfile import crashed

SVG_NS = "{http://www.w3.org/2000/svg}"
EVIL = "<script>alert(\"x\")</script> & 'co'"
NAMES = {
    "bank-a": "Demo Bank",
    "evil": EVIL,
    "formula": '=HYPERLINK("http://x")',
}
SRI = Service.SIGN_REVOCATION_INFO
ARI = Service.AUTH_REVOCATION_INFO
CRL = Service.SIGN_CRL_FILE


def jst(y: int, m: int, d: int) -> float:
    return datetime(y, m, d, 12, tzinfo=UTC).timestamp() - JST_OFFSET


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


# (year, month, day, party, service, method, count): 2024 and 2026 must not be reported
PROVISIONS = [
    (2024, 12, 31, "bank-a", SRI, Method.OCSP, 1000),
    (2025, 1, 1, "bank-a", SRI, Method.OCSP, 120),
    (2025, 1, 15, "bank-a", SRI, Method.OCSP, 30),
    (2025, 1, 15, "bank-a", SRI, Method.JSON, 4),
    (2025, 3, 3, "bank-a", CRL, Method.CRL_FILE, 24),
    (2025, 3, 3, "evil", SRI, Method.OCSP, 7),
    (2025, 7, 7, "formula", ARI, Method.OCSP, 77),
    (2025, 12, 31, "gone", ARI, Method.JSON, 5),
    (2026, 1, 1, "evil", SRI, Method.OCSP, 999),
]


@pytest.fixture(scope="module")
def ledger_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("ledger")
    clock = Clock()
    clock.t = jst(2024, 12, 31)
    with LedgerWriter.open(d, 0, clock=clock) as w0, LedgerWriter.open(d, 1, clock=clock) as w1:
        for i, (y, m, day, party, service, method, n) in enumerate(PROVISIONS):
            clock.t = jst(y, m, day)
            w0.tick()
            w1.tick()
            (w0 if i % 2 else w1).count(party, service, method, n)
    with Ledger.open(d) as ledger:
        assert ledger.collect().refused == []
    return d


@pytest.fixture
def ledger(ledger_dir: Path) -> Iterator[Ledger]:
    with Ledger.open(ledger_dir, readonly=True) as led:
        yield led


ISSUED = {
    "sign-card": {"2025-01": 10, "2025-02": 3},
    "sign-mobile": {},
    "auth-card": {"2025-12": 5},
    "auth-mobile": {},
}


@pytest.fixture
def report(ledger: Ledger) -> Report:
    return build_report(
        ledger,
        2025,
        registry_names=NAMES,
        issuance_counts=ISSUED,
        generated_at=datetime(2026, 1, 5, tzinfo=UTC),
    )


def expected(year: int) -> Counter[tuple[str, str, str, str]]:
    """(party, month, service, method) -> count, straight from the list of provisions."""
    c: Counter[tuple[str, str, str, str]] = Counter()
    for y, m, _, party, service, method, n in PROVISIONS:
        if y == year:
            c[(party, f"{y}-{m:02d}", service.value, method.value)] += n
    return c


# --- numbers ------------------------------------------------------------------------


def test_json_numbers_equal_the_ledger(report: Report, ledger: Ledger) -> None:
    doc = msgspec.json.decode(to_json(report))
    got: Counter[tuple[str, str, str, str]] = Counter()
    for r in doc["recipients"]:
        for x in r["lines"]:
            got[(r["party"], x["month"], x["service"], x["method"])] += x["count"]
        assert r["total"] == sum(x["count"] for x in r["lines"])
    assert got == expected(2025)
    assert got == Counter(
        ledger.totals(
            date(2025, 1, 1), date(2025, 12, 31), by=("party", "month", "service", "method")
        )
    )
    assert doc["total"] == sum(expected(2025).values()) == 267
    assert doc["monthly"] == {
        "sign-revocation-info": [154, 0, 7, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        "sign-crl-file": [0, 0, 24, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        "auth-revocation-info": [0, 0, 0, 0, 0, 0, 77, 0, 0, 0, 0, 5],
    }
    assert doc["by_service_method"]["sign-revocation-info"] == {"json": 4, "ocsp": 157}
    names = {r["party"]: (r["name"], r["registered"]) for r in doc["recipients"]}
    assert names["evil"] == (EVIL, True)
    assert names["gone"] == ("gone", False)
    assert doc["issuance"] == ISSUED
    assert doc["legend"]["services"]["sign-record-info"]["ja"] == "特定署名用電子証明書記録情報"


def test_csv_numbers_equal_the_ledger(report: Report) -> None:
    text = to_csv(report)
    assert text.startswith(",".join(CSV_COLUMNS) + "\r\n")
    rows = list(csv.DictReader(io.StringIO(text)))
    got: Counter[tuple[str, str, str, str]] = Counter()
    for row in rows:
        if row["kind"] == "provision":
            got[(row["recipient"], row["month"], row["item"], row["method"])] += int(row["count"])
    assert got == expected(2025)
    issued = {(r["item"], r["month"]): int(r["count"]) for r in rows if r["kind"] == "issuance"}
    assert issued == {
        ("sign-card", "2025-01"): 10,
        ("sign-card", "2025-02"): 3,
        ("auth-card", "2025-12"): 5,
    }
    by_party = {r["recipient"]: r["recipient_name"] for r in rows if r["kind"] == "provision"}
    assert by_party["formula"].startswith("'=")  # not a formula in a spreadsheet
    assert by_party["evil"] == EVIL  # CSV quoting keeps it intact


def test_issuance_counts_of_another_year_are_refused(ledger: Ledger) -> None:
    with pytest.raises(ValueError, match="not in 2025"):
        build_report(ledger, 2025, registry_names={}, issuance_counts={"sign-card": {"2024-12": 1}})
    with pytest.raises(ValueError, match="unknown family"):
        build_report(ledger, 2025, registry_names={}, issuance_counts={"nope": {}})


# --- HTML -----------------------------------------------------------------------------

VOID = {"meta", "br", "link", "img", "hr", "input", "col", "area", "base", "wbr", "source"}


class Balance(HTMLParser):
    """Every element closed in order; records start tags and text."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.tags: Counter[str] = Counter()
        self.text: list[str] = []
        self.errors: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags[tag] += 1
        if tag not in VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags[tag] += 1

    def handle_endtag(self, tag: str) -> None:
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1:]}")
        else:
            self.stack.pop()

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def test_html_is_well_formed_with_headings_and_escaping(report: Report) -> None:
    page = to_html(report)
    p = Balance()
    p.feed(page)
    p.close()
    assert p.errors == [] and p.stack == []
    assert p.tags["script"] == 0 and p.tags["svg"] == 1 and p.tags["html"] == 1
    root = ET.fromstring(page)  # the page is also well-formed XML
    assert root.tag == "html"
    text = "".join(p.text)
    for heading in (
        "報告書 / Annual report",
        "提供先 / Recipient",
        "提供を行った年月 / Month",
        "提供の種類 / Kind of provision",
        "提供の方法 / Method",
        "件数 / Count",
        "発行件数 / Certificates issued",
    ):
        assert heading in text, heading
    assert EVIL in text  # shown as text ...
    assert "<script>" not in page  # ... never as markup
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &#x27;co&#x27;" in page
    # self-contained: no links to anything, no scripts, no event handlers
    assert not re.search(r"\s(src|href|on[a-z]+)\s*=", page, re.IGNORECASE)
    assert "Demo Bank" in text and "登録簿にない / not in the registry" in text


def test_a_report_missing_refused_ledger_files_says_so(ledger: Ledger) -> None:
    """A report made although worker files of the ledger could not be read (``responder
    report --allow-refused``, the public /reports/) says, in every rendering, that its
    counts are too low: the 報告書 (Act §41, Ord §72) never passes for whole when it is not."""
    whole = build_report(ledger, 2025, registry_names={}, issuance_counts=None)
    short = build_report(ledger, 2025, registry_names={}, issuance_counts=None, refused_files=2)
    assert whole.refused_files == 0 and short.refused_files == 2
    assert short.total == whole.total  # what was read is reported as it is
    assert "不完全" not in to_html(whole) and "Incomplete" not in to_html(whole)
    page = to_html(short)
    assert "不完全" in page and "Incomplete" in page and "2" in page
    ET.fromstring(page)  # still well-formed
    assert msgspec.json.decode(to_json(short))["refused_files"] == 2
    rows = list(csv.reader(io.StringIO(to_csv(short))))
    assert rows[-1][0] == "incomplete" and rows[-1][-1] == "2"
    assert all(r[0] != "incomplete" for r in csv.reader(io.StringIO(to_csv(whole))))


GATHERED = GatheringState(gathered_at=1_767_225_600, failures=3, failing=0)  # 2026-01-01 00:00 UTC


def test_what_a_report_is_as_of_is_decided_from_the_ledgers_meta() -> None:
    """Sans-I/O: a node alone is as of its last collection; a node of several as of its last
    gathering that succeeded, incomplete while the gatherings since failed or before any."""
    at = datetime(2026, 1, 1, tzinfo=UTC)
    assert as_of("node", 1_767_225_600, GatheringState(gathered_at=0, failures=9, failing=9)) == (
        AsOf(scope="node", at=at, failing=0, complete=True)
    )
    assert as_of("node", 0, GATHERED) == AsOf(scope="node", at=None, failing=0, complete=False)
    assert as_of("service", 5, GATHERED) == AsOf(scope="service", at=at, failing=0, complete=True)
    failing = msgspec.structs.replace(GATHERED, failing=2)
    assert as_of("service", 5, failing) == AsOf(scope="service", at=at, failing=2, complete=False)
    never = GatheringState(gathered_at=0, failures=1, failing=1)
    assert as_of("service", 5, never) == AsOf(scope="service", at=None, failing=1, complete=False)


def _renderings(report: Report) -> tuple[str, dict[str, object], list[list[str]]]:
    page = to_html(report)
    ET.fromstring(page)  # still well-formed
    return page, msgspec.json.decode(to_json(report)), list(csv.reader(io.StringIO(to_csv(report))))


def test_every_rendering_says_how_current_the_report_is(ledger: Ledger) -> None:
    """/reports/ renders from the ledger as last collected or gathered (it neither collects
    nor exchanges with the ledger stream itself): every format says as of when, in UTC and
    JST, and where the counts come from; never silently."""
    current = as_of("service", 0, GATHERED)
    report = build_report(ledger, 2025, registry_names={}, issuance_counts=None, as_of=current)
    page, doc, rows = _renderings(report)
    assert "2026-01-01 00:00:00 UTC (2026-01-01 09:00:00 JST)" in page
    assert "gathered from the cluster" in page and "Incomplete" not in page
    assert doc["as_of"] == {
        "scope": "service", "at": "2026-01-01T00:00:00Z", "failing": 0, "complete": True,
    }  # fmt: skip
    assert rows[-1][0] == "as-of" and rows[-1][4] == "gathered-from-cluster"
    assert rows[-1][-1] == "2026-01-01T00:00:00+00:00"
    assert all(r[0] != "incomplete" for r in rows)
    node = build_report(ledger, 2025, registry_names={}, issuance_counts=None,
                        as_of=as_of("node", 1_767_225_600, GATHERED))  # fmt: skip
    page, doc, rows = _renderings(node)
    assert "this appliance's ledger" in page and "2026-01-01 09:00:00 JST" in page
    assert rows[-1][4] == "collected-on-node"


def test_a_report_gathered_before_failing_gatherings_says_it_is_incomplete(
    ledger: Ledger,
) -> None:
    """NATS down: the report still renders, from what was last gathered, and says since when
    the gatherings fail: marked incomplete as refused ledger files are."""
    failing = as_of("service", 0, msgspec.structs.replace(GATHERED, failing=4))
    report = build_report(ledger, 2025, registry_names={}, issuance_counts=None, as_of=failing)
    page, doc, rows = _renderings(report)
    assert "Incomplete" in page and "4 gathering(s) from the cluster since then failed" in page
    assert "2026-01-01 00:00:00 UTC" in page
    assert doc["as_of"]["complete"] is False and doc["as_of"]["failing"] == 4  # type: ignore[index]
    assert rows[-2][0] == "as-of" and rows[-2][-1] == "2026-01-01T00:00:00+00:00"
    assert rows[-1] == ["incomplete", "", "", "", "cluster-gathering-failing",
                        rows[-1][5], "", "4"]  # fmt: skip
    never = as_of("service", 0, GatheringState(gathered_at=0, failures=0, failing=0))
    report = build_report(ledger, 2025, registry_names={}, issuance_counts=None, as_of=never)
    page, doc, rows = _renderings(report)
    assert "not gathered from the cluster yet" in page and "Incomplete" in page
    assert doc["as_of"]["at"] is None  # type: ignore[index]
    assert rows[-2][0] == "as-of" and rows[-2][-1] == ""
    assert rows[-1][0] == "incomplete" and rows[-1][4] == "not-yet-gathered"


def ledger_bytes(d: Path) -> dict[str, bytes]:
    """Every file of a ledger directory, byte for byte, but SQLite's read-only WAL reader's
    own: its shared-memory index (``-shm``, no ledger data) and an empty ``-wal`` (it commits
    nothing), which it makes when no writer has the ledger open, as a /metrics scrape does."""
    out = {}
    for p in sorted(d.iterdir()):
        if p.name.endswith("-shm") or (p.name.endswith("-wal") and p.stat().st_size == 0):
            continue
        out[p.name] = p.read_bytes()
    return out


def test_rendering_a_ledger_directory_writes_nothing(tmp_path: Path) -> None:
    """`render_ledger_dir` (what /reports/ runs) reads the ledger as it stands: a worker file
    not yet collected stays uncollected, no byte of the directory changes; the report is as
    of the last collection, and a directory with no ledger yet renders no counts, marked
    incomplete, and creates none."""
    d = tmp_path / "ledger"
    d.mkdir()
    empty = render_ledger_dir(d, 2025, "json", registry_names={}, scope="service")
    doc = msgspec.json.decode(empty[0])
    assert doc["total"] == 0 and doc["as_of"]["complete"] is False and list(d.iterdir()) == []
    assert doc["as_of"]["at"] is None
    clock = Clock()
    clock.t = jst(2025, 3, 1)
    with LedgerWriter.open(d, 0, clock=clock) as w:
        w.count("bank-a", SRI, Method.OCSP, 5)
    with Ledger.open(d) as led:
        led.collect(now=1_767_225_600)
    with LedgerWriter.open(d, 0, clock=clock) as w:
        w.count("bank-a", SRI, Method.OCSP, 2)  # counted after the collection
    before = ledger_bytes(d)
    for fmt in ("json", "csv", "html"):
        render_ledger_dir(d, 2025, fmt, registry_names={}, scope="node")  # type: ignore[arg-type]
    assert ledger_bytes(d) == before
    doc = msgspec.json.decode(
        render_ledger_dir(d, 2025, "json", registry_names={}, scope="node")[0]
    )
    assert doc["total"] == 5  # as of the collection: the later 2 wait for the next one
    assert doc["as_of"] == {
        "scope": "node", "at": "2026-01-01T00:00:00Z", "failing": 0, "complete": True,
    }  # fmt: skip


def test_svg_chart_has_one_bar_per_month_per_service(report: Report) -> None:
    page = to_html(report)
    svgs = re.findall(r"<svg\b.*?</svg>", page, re.DOTALL)
    assert len(svgs) == 1
    svg = ET.fromstring(svgs[0])
    assert svg.tag == f"{SVG_NS}svg"
    bars = [r for r in svg.iter(f"{SVG_NS}rect") if r.get("class") == "bar"]
    seen = Counter((b.get("data-service"), b.get("data-month")) for b in bars)
    assert len(bars) == 12 * len(report.monthly) == 36
    assert set(seen.values()) == {1}
    for b in bars:
        service, month = b.get("data-service"), b.get("data-month")
        assert service is not None and month is not None
        value = report.monthly[service][int(month[5:]) - 1]
        assert b.get("data-count") == str(value)
        assert (float(b.get("height", "-1")) > 0) == (value > 0)
        title = b.find(f"{SVG_NS}title")
        assert title is not None and title.text is not None and month in title.text
    # taller bar for a bigger count
    h = {(b.get("data-service"), b.get("data-month")): float(b.get("height", "0")) for b in bars}
    assert h[("sign-revocation-info", "2025-01")] > h[("auth-revocation-info", "2025-07")]
    assert h[("auth-revocation-info", "2025-07")] > h[("sign-crl-file", "2025-03")]


def test_a_year_without_provisions_still_renders(ledger: Ledger) -> None:
    report = build_report(ledger, 2019, registry_names=NAMES, issuance_counts=None)
    assert report.total == 0 and report.recipients == [] and report.issuance is None
    page = to_html(report)
    ET.fromstring(page)
    assert "No provisions" in page and 'class="bar"' not in page
    assert "発行件数" not in page
    assert to_csv(report) == ",".join(CSV_COLUMNS) + "\r\n"


# --- serving and CLI -----------------------------------------------------------------


def test_report_paths_and_render_year(ledger: Ledger) -> None:
    assert parse_report_path(b"/reports/2025") == (2025, "html")
    assert parse_report_path(b"/reports/2025.csv") == (2025, "csv")
    assert parse_report_path(b"/reports/2025.json") == (2025, "json")
    for bad in (b"/reports/25", b"/reports/2025.xml", b"/reports/2025/", b"/report/2025"):
        assert parse_report_path(bad) is None
    body, ctype = render_year(ledger, 2025, "json", registry_names=NAMES)
    assert ctype == b"application/json" and msgspec.json.decode(body)["total"] == 267
    body, ctype = render_year(ledger, 2025, "html", registry_names=NAMES)
    assert ctype.startswith(b"text/html") and "報告書".encode() in body
    with pytest.raises(ValueError):
        render(build_report(ledger, 2025, registry_names={}, issuance_counts=None), "pdf")  # type: ignore[arg-type]


REGISTRY = """
[[party]]
id = "bank-a"
name = "Demo Bank"
titles = ["signature-verifier"]

[[party]]
id = "evil"
name = '<script>alert("x")</script>'
titles = ["user-verifier"]
"""


def _cli(*argv: str) -> int:
    from responder.cli import parser  # the command's flags: `responder report`'s own

    args = parser().parse_args(["report", *argv])
    rc: int = args.func(args)
    return rc


def test_cli_writes_the_report(ledger_dir: Path, tmp_path: Path) -> None:
    d = tmp_path / "ledger"
    shutil.copytree(ledger_dir, d)
    registry = tmp_path / "registry.toml"
    registry.write_text(REGISTRY, encoding="utf-8")
    assert load_registry_names(registry) == {
        "bank-a": "Demo Bank",
        "evil": '<script>alert("x")</script>',
    }
    out = tmp_path / "out" / "2025.json"
    args = ["--year", "2025", "--ledger", str(d), "--registry", str(registry)]
    assert _cli(*args, "--format", "json", "--out", str(out)) == 0
    doc = msgspec.json.decode(out.read_bytes())
    assert doc["total"] == 267
    assert {r["party"]: r["name"] for r in doc["recipients"]}["bank-a"] == "Demo Bank"
    html_out = tmp_path / "2025.html"
    stale = crashed(html_out)  # an earlier run's temporary, killed before its rename
    assert _cli(*args, "--out", str(html_out)) == 0
    assert not stale.exists()
    ET.fromstring(html_out.read_text(encoding="utf-8"))
    # a worker file the collector refuses: no report unless asked for
    (d / "w0009-00000000000000000000000000000000.ledger").write_bytes(b"\0" * 10)
    bad_out = tmp_path / "bad.csv"
    assert _cli(*args, "--format", "csv", "--out", str(bad_out)) == 1
    assert not bad_out.exists()
    assert _cli(*args, "--format", "csv", "--out", str(bad_out), "--allow-refused") == 0
    text = bad_out.read_text(encoding="utf-8")
    assert text.startswith("kind,")
    # written anyway, it says that its counts are short, and by how many files
    assert list(csv.reader(io.StringIO(text)))[-1][0] == "incomplete"
    assert list(csv.reader(io.StringIO(text)))[-1][-1] == "1"
    assert _cli(*args, "--format", "json", "--out", str(out), "--allow-refused") == 0
    doc = msgspec.json.decode(out.read_bytes())
    assert doc["refused_files"] == 1
    assert doc["as_of"]["scope"] == "node" and doc["as_of"]["complete"] is True
    # read-only (--no-collect), as the last collection saw it: short by the file it refused
    # (said 0 before, the report passing for whole)
    assert _cli(*args, "--format", "csv", "--out", str(bad_out), "--no-collect") == 0
    rows = list(csv.reader(io.StringIO(bad_out.read_text(encoding="utf-8"))))
    assert rows[-2][:5] == ["as-of", "", "", "", "collected-on-node"]
    assert rows[-1][0] == "incomplete" and rows[-1][4:] == ["refused-ledger-files",
                                                            rows[-1][5], "", "1"]  # fmt: skip
    assert _cli("--year", "25", "--ledger", str(d)) == 2
    assert _cli("--year", "2025", "--ledger", str(tmp_path / "none"), "--no-collect") == 2


def test_cli_writes_a_report_naming_a_groups_members_for_its_owner_only(
    ledger_dir: Path, tmp_path: Path
) -> None:
    """A group's appliance reports its own ledger (``responder report``; it publishes none):
    its recipients are its members (署名確認者, Act §20(1)), natural persons among them, whose
    names the report then holds. It was written 0644, readable by every account of the host,
    like the 機構's public report; with a registry naming a member it is written 0600."""
    d = tmp_path / "ledger"
    shutil.copytree(ledger_dir, d)
    public, group = tmp_path / "public.toml", tmp_path / "group.toml"
    public.write_text(REGISTRY, encoding="utf-8")
    group.write_text(
        REGISTRY + '\n[[party]]\nid = "gyosei-1"\nname = "行政書士 山田太郎"\n'
        'titles = ["signature-confirmer"]\ngroup = "bank-a"\n',
        encoding="utf-8",
    )
    args = ["--year", "2025", "--ledger", str(d)]
    for registry in (public, group):
        out = tmp_path / f"{registry.stem}.html"
        assert _cli(*args, "--registry", str(registry), "--out", str(out)) == 0
        assert stat.S_IMODE(out.stat().st_mode) == 0o600, registry.stem


@pytest.mark.parametrize("fmt", ["html", "csv", "json"])
def test_every_report_file_is_its_writers_only(ledger_dir: Path, tmp_path: Path, fmt: str) -> None:
    """A report names parties and counts what each was provided; written without
    ``--registry`` (a group's ledger among them: its members named by their ids) or with the
    機構's registry, it was 0644, readable by every account of the host. Every report file is
    `REPORT_FILE_MODE` (0600) now, one that existed 0644 included (replaced whole)."""
    d = tmp_path / "ledger"
    shutil.copytree(ledger_dir, d)
    public = tmp_path / "public.toml"
    public.write_text(REGISTRY, encoding="utf-8")
    old = tmp_path / f"old.{fmt}"
    old.write_text("an earlier report")
    old.chmod(0o644)
    base = ["--year", "2025", "--ledger", str(d), "--format", fmt]
    for extra, out in (([], tmp_path / f"bare.{fmt}"), (["--registry", str(public)], old)):
        assert _cli(*base, *extra, "--out", str(out)) == 0
        assert out.read_bytes() != b"an earlier report"
        assert stat.S_IMODE(out.stat().st_mode) == REPORT_FILE_MODE == 0o600, extra


def test_cli_refuses_a_missing_ledger_and_an_unwritable_out(
    ledger_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A mistyped --ledger is refused (no empty ledger made there, no report of zeros); an
    existing empty ledger directory reports nothing counted; --out that cannot be written is
    one error line, exit 2, no temporary file left."""
    missing = tmp_path / "mistyped"
    assert _cli("--year", "2025", "--format", "json", "--ledger", str(missing)) == 2
    assert not missing.exists()
    assert capsys.readouterr().err == (
        f"responder report: error: {missing}: no ledger directory here "
        "(the responder's [ledger] dir)\n"
    )
    empty = tmp_path / "empty"
    empty.mkdir()
    assert _cli("--year", "2025", "--format", "json", "--ledger", str(empty)) == 0
    assert msgspec.json.decode(capsys.readouterr().out)["total"] == 0
    d = tmp_path / "ledger"
    shutil.copytree(ledger_dir, d)
    for out, said in ((tmp_path, "Is a directory"), (tmp_path / "file" / "x.csv", "File exists")):
        (tmp_path / "file").touch()
        assert _cli("--year", "2025", "--ledger", str(d), "--out", str(out)) == 2
        err = capsys.readouterr().err
        assert err == f"responder report: error: {out}: cannot write the report ({said})\n", err
    assert not list(tmp_path.glob(".*.tmp"))


# --- a real browser ------------------------------------------------------------------


def _png_colours(path: Path) -> tuple[int, int, int]:
    """(width, height, distinct colours) of an 8-bit RGB/RGBA PNG, decoded with zlib only."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat = 8, bytearray()
    width = height = colour_type = 0
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        chunk = data[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            width, height, depth, colour_type, _, _, interlace = struct.unpack(">IIBBBBB", chunk)
            assert depth == 8 and interlace == 0 and colour_type in (2, 6)
        elif kind == b"IDAT":
            idat += chunk
        pos += 12 + length
    bpp = 3 if colour_type == 2 else 4
    stride = width * bpp
    raw = zlib.decompress(bytes(idat))
    prev = bytearray(stride)
    colours: set[bytes] = set()
    for y in range(height):
        ftype = raw[y * (stride + 1)]
        line = bytearray(raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)])
        if ftype == 1:
            for i in range(bpp, stride):
                line[i] = (line[i] + line[i - bpp]) & 0xFF
        elif ftype == 2:
            line = bytearray((a + b) & 0xFF for a, b in zip(line, prev, strict=True))
        elif ftype == 3:
            for i in range(stride):
                left = line[i - bpp] if i >= bpp else 0
                line[i] = (line[i] + ((left + prev[i]) >> 1)) & 0xFF
        elif ftype == 4:
            for i in range(stride):
                a = line[i - bpp] if i >= bpp else 0
                b = prev[i]
                c = prev[i - bpp] if i >= bpp else 0
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                pred = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
                line[i] = (line[i] + pred) & 0xFF
        for x in range(0, stride, bpp * 3):
            colours.add(bytes(line[x : x + 3]))
        prev = line
    return width, height, len(colours)


@pytest.mark.interop
def test_chromium_renders_the_page(report: Report, tmp_path: Path) -> None:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("chromium is not installed (Debian package: chromium)")
    page = tmp_path / "2025.html"
    page.write_text(to_html(report), encoding="utf-8")
    png = tmp_path / "shot.png"
    common = [
        chromium,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--window-size=1200,900",
    ]
    env = {**os.environ, "HOME": str(tmp_path)}
    shot = subprocess.run(
        [*common, f"--screenshot={png}", page.as_uri()],
        capture_output=True,
        timeout=120,
        env=env,
        check=False,
    )
    assert png.exists(), shot.stderr.decode(errors="replace")[-2000:]
    width, height, colours = _png_colours(png)
    assert (width, height) == (1200, 900)
    assert colours > 8, f"a blank page? {colours} colours"
    dom = subprocess.run(
        [*common, "--dump-dom", page.as_uri()],
        capture_output=True,
        timeout=120,
        env=env,
        check=False,
    ).stdout.decode()
    assert dom.count("<svg") == 1
    assert dom.count('class="bar"') == 36
    assert "報告書 / Annual report" in dom
    assert "<script>alert" not in dom
