"""Session fixtures: one demo PKI, one synthetic population, one built store, shared by the suite.

Building them costs a few seconds; each test that needs its own copy makes one.
The population is synthesized as of now (to the minute) so that the answers it
expects are the answers a responder started now must give.

Unit and integration tests (``pytest -m unit`` runs in seconds, ``-m "not unit"`` the rest,
``make test`` both): a test is marked ``unit`` here, at collection, unless

- it uses, directly or through other fixtures, one of `INTEGRATION_FIXTURES` (the demo PKI,
  the built population, which run the command-line tools), or
- it is marked ``integration`` (a module's ``pytestmark`` or the test's own mark: it starts
  processes, a responder, the command-line tools, systemd) or ``interop`` (it runs another
  implementation: openssl, gnutls, a JDK, Chromium, Prometheus).

The rule is enforced: a ``unit`` test that starts a process fails, saying to mark it
``integration``.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

import msgspec
import pytest

from crlbuilder.demo.pki import init_pki
from crlbuilder.manifest import Manifest
from crlbuilder.model import Answer
from responder.config import ResponderConfig
from tests.expected import as_served
from tests.support.nats import NatsCluster, nats_cluster

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
HOLDERS = 1500


@dataclass(frozen=True)
class Built:
    """A PKI, a population and a store built from it."""

    pki: Path
    manifest: Manifest
    population: Path
    store: Path
    crl_dir: Path
    facts_key: Path
    quarantine: Path
    registry: Path
    """The demo parties' registry (`responder registry init`): consents are checked against it."""
    as_of: datetime
    answers: list[Answer]
    """What the responder must answer for each sample (`tests.expected.as_served`: answers.jsonl
    after retention has erased old revocation records, Ord §70(1)(iii))."""
    summary: dict[str, object]

    def builder_args(self, store: Path | None = None, crl_dir: Path | None = None) -> list[str]:
        store = store or self.store
        crl_dir = crl_dir or self.crl_dir
        return [
            "--config", str(ROOT / "config" / "builder.toml"),
            "--store", str(store), "--pki", str(self.pki),
            "--input", str(self.population / "records"),
            "--facts-key-file", str(self.facts_key),
            "--quarantine", str(store.parent / f"{store.name}-quarantine.jsonl"),
            "--notices", str(store.parent / f"{store.name}-notices.jsonl"),
            "--crl-dir", str(crl_dir), "--spool", str(store.parent / f"{store.name}-spool"),
            "--registry", str(self.registry),
            "--as-of", self.as_of.isoformat(), "--no-progress",
        ]  # fmt: skip

    def app_config(self, directory: Path, **overrides: object) -> ResponderConfig:
        """The configuration of one in-process app (`responder.app.JpkiApp`) serving this
        store, with a fresh registry (`responder registry init`) and ledger under
        ``directory``, one worker, metrics off; ``overrides`` by dotted name."""
        from responder.config import load_config

        registry = directory / "registry.toml"
        run_tool("responder", "registry", "init", "--pki", str(self.pki), "--out", str(registry))
        return load_config(
            None,
            {
                "store.path": str(self.store),
                "store.pki": str(self.pki),
                "store.crl_dir": str(self.crl_dir),
                "registry.path": str(registry),
                "ledger.dir": str(directory / "ledger"),
                "server.workers": 1,
                "metrics.enabled": False,
                **overrides,
            },
        )


INTEGRATION_FIXTURES = frozenset({"built", "demo_pki", "nats"})


def is_unit(item: pytest.Item) -> bool:
    """The rule of the module docstring."""
    if item.get_closest_marker("integration") or item.get_closest_marker("interop"):
        return False
    return not INTEGRATION_FIXTURES.intersection(getattr(item, "fixturenames", ()))


RUN_FIRST: Final = (
    "test_stream.py", "test_ceremony.py", "test_presign.py", "test_cluster.py",
    "test_tokens.py", "test_group_appliance.py", "test_responder_interop.py",
    "test_stream_adopt.py", "test_v1_changes_server.py", "test_agreements_server.py",
    "test_token_stream.py", "test_deploy.py", "test_metrics.py", "test_demo.py",
    "test_crl_cycle.py", "test_v1_openapi.py", "test_build.py", "test_token_server.py",
    "test_haproxy_crl.py", "test_spool_kill.py", "test_java_interop.py", "test_crl_serving.py",
)  # fmt: skip
"""The files that take longest (summed from ``--durations=0``, 2026-12-07), slowest first: run
before the others, so that under ``make test``'s ``--dist loadfile --no-loadscope-reorder`` no
worker starts a two-minute file while the others run out of files (xdist's own order, most
tests first, started test_cluster.py's two 50-second tests last). Scheduling only: a file not
named runs after them, most tests first, as xdist would order it."""


def _run_order(items: list[pytest.Item]) -> None:
    """Order ``items`` file by file (`RUN_FIRST`, then the most tests first), each file's tests
    in their own order, so module fixtures stay whole."""
    counts: dict[Path, int] = {}
    for item in items:
        counts[item.path] = counts.get(item.path, 0) + 1
    first = {name: i for i, name in enumerate(RUN_FIRST)}
    items.sort(key=lambda it: (first.get(it.path.name, len(first)), -counts[it.path], str(it.path)))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Order the files (`_run_order`); mark unit tests; under libfaketime (`make
    test-shifted`), skip what needs the real clock."""
    _run_order(items)
    for item in items:
        if is_unit(item):
            item.add_marker(pytest.mark.unit)
    if "faketime" not in os.environ.get("LD_PRELOAD", ""):
        return
    skip = pytest.mark.skip(
        reason="needs the real clock: timed waits or a Go program under libfaketime"
    )
    for item in items:
        if item.get_closest_marker("real_clock"):
            item.add_marker(skip)


@contextlib.contextmanager
def _no_process(item: pytest.Item) -> Iterator[None]:
    """While ``item`` (a unit test) sets up and runs, starting a process fails."""
    popen_init = subprocess.Popen.__init__

    def refuse(self: subprocess.Popen[bytes], *args: object, **kwargs: object) -> None:
        raise AssertionError(
            f"the unit test {item.nodeid} started a process "
            f"({args[0] if args else kwargs.get('args')!r}): mark it integration "
            "(see tests/conftest.py)"
        )

    subprocess.Popen.__init__ = refuse  # type: ignore[assignment]
    try:
        yield
    finally:
        subprocess.Popen.__init__ = popen_init  # type: ignore[method-assign]


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    """A unit test, and the fixtures set up for it (a module's server too), start no process."""
    if item.get_closest_marker("unit") is None:
        return (yield)
    with _no_process(item):
        return (yield)


def run_tool(name: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / name), *args], capture_output=True, text=True, check=check, timeout=600
    )


@pytest.fixture
def mp_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A prometheus_client multiprocess directory for this process (tests/test_metrics.py,
    tests/test_metricfiles.py); its value class restored after."""
    from prometheus_client import values

    from responder.metrics import ENV

    d = tmp_path / "mp"
    d.mkdir(mode=0o700)
    monkeypatch.setenv(ENV, str(d))
    before = values.ValueClass
    yield d
    values.ValueClass = before


@pytest.fixture(scope="session")
def demo_pki(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Manifest]:
    d = tmp_path_factory.mktemp("pki") / "pki"
    return d, init_pki(d)


@pytest.fixture(scope="session")
def nats(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsCluster]:
    """Three clustered JetStream servers on loopback, shared by the several-node tests (each
    names its own streams and buckets); stopped by PID at the end (`tests.support.nats`)."""
    with nats_cluster(tmp_path_factory.mktemp("nats")) as c:
        yield c


@pytest.fixture
def cluster(nats: NatsCluster) -> NatsCluster:
    """The session's NATS cluster (`nats`), by the name the several-node tests give it."""
    return nats


@pytest.fixture(scope="session")
def built(tmp_path_factory: pytest.TempPathFactory, demo_pki: tuple[Path, Manifest]) -> Built:
    pki, manifest = demo_pki
    return make_built(pki, manifest, tmp_path_factory.mktemp("built"))


def make_built(pki: Path, manifest: Manifest, base: Path, holders: int = HOLDERS) -> Built:
    """Synthesize a population of ``pki`` as of now, a facts key, a registry, and build it
    under ``base`` (the `built` fixture; tests/test_softhsm_interop.py with keys in a token)."""
    as_of = datetime.now(UTC).replace(second=0, microsecond=0)
    pop = base / "population"
    run_tool(
        "crlbuilder", "synth", "--pki", str(pki), "--holders", str(holders), "--out", str(pop),
        "--seed", "7", "--as-of", as_of.isoformat(),
    )  # fmt: skip
    key = base / "facts.key"
    run_tool("crlbuilder", "facts-key", "--out", str(key))
    registry = base / "registry.toml"
    run_tool("responder", "registry", "init", "--pki", str(pki), "--out", str(registry))
    b = Built(
        pki=pki, manifest=manifest, population=pop, store=base / "store", crl_dir=base / "crl",
        facts_key=key, quarantine=base / "store-quarantine.jsonl", registry=registry, as_of=as_of,
        answers=[as_served(msgspec.json.decode(line, type=Answer), pop, as_of) for line in (pop / "answers.jsonl").read_bytes().splitlines()],
        summary={},
    )  # fmt: skip
    out = run_tool("crlbuilder", "build", *b.builder_args())
    summary = msgspec.json.decode(out.stderr.strip().splitlines()[-1])
    object.__setattr__(b, "summary", summary)
    return b
