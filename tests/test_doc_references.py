"""What the documents point at, against the repository and the command lines.

tests/test_doc_commands.py parses README.md's shell blocks, tests/test_deploy.py
docs/operations.md's, tests/test_config_docs.py checks the configuration fields named and
tests/test_deploy.py the alerts and metrics. This file checks the rest a reader follows:

- every relative Markdown link of README.md, docs/*.md, deploy/README.md and bench/README.md
  names a file of the repository, and its ``#anchor`` a heading of that file;
- every repository path a document, a configuration example or a deploy/ file names
  (``crlbuilder/store/format.py``, ``deploy/systemd/jpki-va-node-*.service``) exists;
- every ``crlbuilder``/``responder`` command written in backquotes in the prose of those
  documents names real subcommands, and each ``--flag`` it shows is one of that
  subcommand's (their shell blocks: the tests above);
- every ``python -m bench.NAME ... --flag`` shown is a flag that benchmark accepts;
- docs/architecture.md, the module map, names every module of both packages;
- docs/validation.md's result-code table lists every `ResultCode` once;
- every ``docs/X.md, "Section"`` a document, a comment or a test names is a heading of X (or
  a paragraph's bold or leading label there).
"""

from __future__ import annotations

import argparse
import functools
import re
import shlex
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from crlbuilder import cli as crlbuilder_cli
from responder import cli as responder_cli
from tests.support.cliparsers import flags, subparsers

ROOT = Path(__file__).resolve().parent.parent
DOCS = (
    ROOT / "README.md",
    *sorted((ROOT / "docs").glob("*.md")),
    ROOT / "deploy" / "README.md",
    ROOT / "bench" / "README.md",
)
NAMING = (  # files whose text names repository paths (comments, descriptions)
    *DOCS,
    *sorted((ROOT / "config").glob("*.toml")),
    *sorted(p for p in (ROOT / "deploy").rglob("*") if p.is_file() and p.suffix != ".json"),
)
PARSERS: dict[str, Callable[[], argparse.ArgumentParser]] = {
    "crlbuilder": crlbuilder_cli.parser,
    "responder": responder_cli.parser,
}
PATH_NAMED = re.compile(
    r"(?<![\w/.-])((?:crlbuilder|responder|tests|deploy|docs|config|bench)/[\w./*-]*[\w*])"
)
GONE = {
    "responder/ocspreq": "docs/architecture.md's layout before the split (now ocsp/request)",
}
"""Paths a document names as what was, not what is: each with where and why."""


def _slug(heading: str) -> str:
    """A heading's anchor as GitHub makes it: lower case, punctuation but ``-`` and ``_``
    dropped, each space a ``-``."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _anchors(doc: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", doc.read_text(encoding="utf-8"), flags=re.S)
    return {_slug(h) for h in re.findall(r"^#{1,6} (.+)$", text, re.M)}


def _links(text: str) -> Iterator[str]:
    """The targets of the Markdown links of ``text``, code blocks and spans left out."""
    text = re.sub(r"```.*?```", "", text, flags=re.S)
    text = re.sub(r"`[^`\n]*`", "", text)
    yield from re.findall(r"\]\(([^)\s]+)\)", text)


def test_the_readers_of_links_and_anchors() -> None:
    assert _slug("Upgrading the nodes of one stream") == "upgrading-the-nodes-of-one-stream"
    assert (
        _slug("Tokens for 特定利用者証明検証者 (Act §38-3)")
        == "tokens-for-特定利用者証明検証者-act-38-3"
    )
    assert _slug("crlbuilder: `/etc/jpki-va/builder.toml`") == "crlbuilder-etcjpki-vabuildertoml"
    assert list(_links("see [a](docs/x.md#y) and `[b](no)`\n```\n[c](no)\n```\n")) == [
        "docs/x.md#y"
    ]


def test_relative_links_name_files_and_headings_that_exist() -> None:
    checked = 0
    for doc in DOCS:
        for link in _links(doc.read_text(encoding="utf-8")):
            if re.match(r"[a-z][a-z0-9+.-]*:", link):  # https:, mailto:
                continue
            path, _, anchor = link.partition("#")
            target = (doc.parent / path).resolve() if path else doc
            where = f"{doc.relative_to(ROOT)}: ({link})"
            assert target.exists(), f"{where}: no such file"
            assert target.is_relative_to(ROOT), f"{where}: outside the repository"
            if anchor and target.suffix == ".md":
                assert anchor in _anchors(target), f"{where}: no heading #{anchor}"
            checked += 1
    assert checked >= 10, checked


def _named_paths(text: str) -> set[str]:
    return {m.rstrip(".") for m in PATH_NAMED.findall(text)}


def test_the_reader_of_named_paths() -> None:
    text = "see crlbuilder/store/format.py, `deploy/systemd/jpki-va-node-*` and docs/."
    assert _named_paths(text) == {"crlbuilder/store/format.py", "deploy/systemd/jpki-va-node-*"}
    assert _named_paths("https://x/docs/operations.md tests/test_x.py") == {"tests/test_x.py"}


def test_every_repository_path_named_exists() -> None:
    missing: list[str] = []
    named = 0
    for doc in NAMING:
        try:
            text = doc.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        for path in _named_paths(text):
            named += 1
            if path in GONE:
                continue
            found = any(ROOT.glob(path)) if "*" in path else (ROOT / path).exists()
            if not found:
                missing.append(f"{doc.relative_to(ROOT)}: {path}")
    assert not missing, missing
    assert named >= 50, named


def _command_spans(text: str) -> Iterator[tuple[int, str]]:
    """(line, text) of each ``crlbuilder``/``responder`` command in backquotes in the prose
    (code blocks left out: their own tests read them)."""
    prose = re.sub(r"```.*?```", lambda m: "\n" * m.group(0).count("\n"), text, flags=re.S)
    for m in re.finditer(r"`((?:crlbuilder|responder) [^`]+)`", prose):
        yield prose[: m.start()].count("\n") + 1, " ".join(m.group(1).split())


def _resolve(words: list[str]) -> tuple[argparse.ArgumentParser, str, list[str]]:
    """The deepest subcommand ``words`` name, its name, and the words after it; each ``a|b``
    word is its first alternative (the synopsis's test checks every one)."""
    parser, name, rest = PARSERS[words[0]](), words[0], words[1:]
    while rest and (subs := subparsers(parser)) and rest[0].split("|")[0] in subs:
        name = f"{name} {rest[0]}"
        parser, rest = subs[rest[0].split("|")[0]], rest[1:]
    return parser, name, rest


def _check_command(where: str, command: str) -> None:
    try:
        words = shlex.split(command.split(" #", 1)[0])
    except ValueError:
        words = command.split()
    if len(words) < 2 or words[1].startswith(("(", "<")) or not words[1][0].isalpha():
        return  # prose ("the responder (POST /v1/token) ..."), not a command line
    parser, name, rest = _resolve(words)
    if rest and rest[0][0].isalpha() and subparsers(parser):
        return  # prose again: "responder answers ...", "crlbuilder runs ..."
    accepted = flags(parser)
    if rest and subparsers(parser):  # "responder registry ... --nats": any of its subcommands
        name, accepted = f"{name} ...", accepted | _descendant_flags(parser)
    for flag in re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", " ".join(rest)):
        assert flag in accepted, f"{where}: `{command}`: {name} has no {flag}"


def _descendant_flags(parser: argparse.ArgumentParser) -> set[str]:
    out: set[str] = set()
    for sub in subparsers(parser).values():
        out |= flags(sub) | _descendant_flags(sub)
    return out


def test_commands_in_the_prose_name_real_subcommands_andflags() -> None:
    checked = 0
    for doc in DOCS:
        for line, command in _command_spans(doc.read_text(encoding="utf-8")):
            _check_command(f"{doc.relative_to(ROOT)}:{line}", command)
            checked += 1
    assert checked >= 100, checked


def test_a_wrong_flag_or_subcommand_is_caught() -> None:
    with pytest.raises(AssertionError, match="build has no --folow"):
        _check_command("x", "crlbuilder build --folow")
    with pytest.raises(AssertionError, match=r"registry \.\.\. has no --nat"):
        _check_command("x", "responder registry ... --nat nats://h")
    _check_command("x", "responder registry ... --nats nats://h")
    with pytest.raises(AssertionError, match="registry suspend has no --since-when"):
        _check_command("x", "responder registry suspend --id X --since-when now")
    _check_command("x", "crlbuilder keys verify-log --log ...")
    _check_command("x", "responder answers again as soon as --anything")  # prose


@functools.cache
def _bench_help(module: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", module, "--help"],
        check=False,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, f"python -m {module} --help: {done.stderr[-500:]}"
    return done.stdout


def _bench_commands(text: str) -> Iterator[tuple[str, str]]:
    """(module, the rest of its command) of each ``python -m bench.NAME ...`` of ``text``: a
    line of a code block, or a code span of the prose (which may break across lines)."""
    pieces: list[str] = []
    for block in re.findall(r"```.*?```", text, flags=re.S):
        pieces += block.replace("\\\n", " ").splitlines()
    prose = re.sub(r"```.*?```", "", text, flags=re.S)
    pieces += [" ".join(span.split()) for span in re.findall(r"`([^`]+)`", prose)]
    for piece in pieces:
        for m in re.finditer(r"python -m (bench\.\w+)((?:(?!python -m).)*)", piece):
            yield m.group(1), m.group(2)


def test_the_reader_of_benchmark_commands() -> None:
    text = "(`python -m\nbench.bench_a --x 1`, then `python -m bench.bench_b --y`)\n"
    text += "```sh\npython -m bench.bench_c --z \\\n    --w\n```\n"
    assert sorted(_bench_commands(text)) == [
        ("bench.bench_a", " --x 1"),
        ("bench.bench_b", " --y"),
        ("bench.bench_c", " --z      --w"),
    ]


@pytest.mark.integration
def test_the_benchmark_commands_shown_take_the_flags_shown() -> None:
    """Each benchmark's own ``--help`` (a process each: they parse their flags in ``main``)."""
    checked = 0
    for doc in DOCS:
        for module, written in _bench_commands(doc.read_text(encoding="utf-8")):
            own = re.sub(r"--serve-arg[= ]\S+", "", written)  # a responder flag, passed on
            own = own.split("--responder ", 1)[0]  # the rest: a command line of its own
            for flag in re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", own):
                assert re.search(rf"{re.escape(flag)}\b", _bench_help(module)), (
                    f"{doc.relative_to(ROOT)}: python -m {module}: no {flag}"
                )
                checked += 1
    assert checked >= 20, checked


ARCHITECTURE = ROOT / "docs" / "architecture.md"


def _unmapped(text: str) -> list[str]:
    """The modules of crlbuilder/ and responder/ the module map ``text`` does not name (the
    map's tables, not its layout before the split): by name in backquotes (``streamgauges``,
    ``keys`` (``pkcs11``, ...)) or by its path in its package (``v1/markdb``)."""
    current = text.split("\n## Layout before and after", 1)[0]
    spans = [m.group(2) for m in re.finditer(r"(`+)(.+?)\1", current, re.S)]
    said = {w for span in spans for w in re.findall(r"[\w/]+", span)}
    out = []
    for package in ("crlbuilder", "responder"):
        for path in sorted((ROOT / package).rglob("*.py")):
            if path.name.startswith("__"):
                continue
            inner = path.relative_to(ROOT / package).with_suffix("").as_posix()
            if path.stem not in said and inner not in said and inner not in current:
                out.append(f"{package}.{inner.replace('/', '.')}")
    return out


def test_the_module_map_names_every_module() -> None:
    assert _unmapped(ARCHITECTURE.read_text(encoding="utf-8")) == []


def test_a_module_left_out_of_the_map_is_named() -> None:
    text = ARCHITECTURE.read_text(encoding="utf-8").replace("`reloadctl`", "`reload`")
    assert _unmapped(text) == ["responder.reloadctl"]


SECTION_REF = re.compile(r"((?:docs/|bench/|deploy/)?[\w-]+\.md),? (?:section )?\"([^\"]+)\"")


def _sections(doc: Path) -> list[str]:
    """What a reference may name in ``doc``: its headings, its list items' bold labels
    (``- **NATS credentials.** ...``) and its paragraphs' leading labels (``Rolling the
    answer key: ...``)."""
    text = re.sub(r"```.*?```", "", doc.read_text(encoding="utf-8"), flags=re.S)
    out = [h.strip() for h in re.findall(r"^#{1,6} (.+)$", text, re.M)]
    out += re.findall(r"^\s*[-*] \*\*([^*]+?)\.?\*\*", text, re.M)
    out += re.findall(r"(?:^|\n\n)([A-Z][^\n:.]{3,60}):", text)
    return out


def _dangling(text: str, here: Path) -> list[str]:
    """The ``FILE.md, "Section"`` references of ``text`` (comment marks and line breaks
    taken out) that name no section of FILE (README.md: the one beside ``here`` when there
    is one, else the repository's)."""
    flat = " ".join(re.sub(r"(?m)^\s*#(?!#)\s?", " ", text).split())
    out = []
    for m in SECTION_REF.finditer(flat):
        name, section = m.group(1), m.group(2)
        candidates = [here.parent / name, ROOT / name, ROOT / "docs" / name]
        target = next((c for c in candidates if c.is_file()), None)
        if target is None:
            out.append(f"{name}: no such file")
        elif not any(h.startswith(section) or section in h for h in _sections(target)):
            out.append(f'{target.relative_to(ROOT)}, "{section}"')
    return out


def test_a_section_named_by_its_title_is_there() -> None:
    missing: list[str] = []
    named = 0
    sources = [*NAMING, *sorted((ROOT / "tests").glob("*.py"))]
    sources += sorted(p for pkg in ("crlbuilder", "responder") for p in (ROOT / pkg).rglob("*.py"))
    for source in sources:
        try:
            text = source.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        if source == Path(__file__):
            continue
        named += len(SECTION_REF.findall(" ".join(text.split())))
        missing += [f"{source.relative_to(ROOT)}: {d}" for d in _dangling(text, source)]
    assert not missing, missing
    assert named >= 80, named


def test_a_renamed_section_is_caught() -> None:
    here = ROOT / "tests" / "x.py"
    assert _dangling('docs/operations.md, "Compacting the store"', here) == [
        'docs/operations.md, "Compacting the store"'
    ]
    assert _dangling('# (docs/operations.md, "A node of several\n# on hosts")', here) == []
    assert _dangling('docs/operations.md, "NATS credentials"', here) == []  # a bold label
    assert _dangling('docs/operations.md, "Rolling the answer key"', here) == []  # a lead


def test_the_result_codes_table_lists_every_code_once() -> None:
    """docs/validation.md, "The result codes": one row per `ResultCode`, none gone."""
    from responder.validation.result import ResultCode

    text = (ROOT / "docs" / "validation.md").read_text(encoding="utf-8")
    table = text.split("\n## The result codes\n", 1)[1].split("\n\n| result | when |\n", 1)[1]
    rows = re.findall(r"^\| `([a-z-]+)` \|", table.split("\n\n", 1)[0], re.M)
    assert sorted(rows) == sorted(code.value for code in ResultCode)
