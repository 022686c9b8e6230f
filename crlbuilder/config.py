"""crlbuilder's configuration: a TOML file validated into msgspec Structs, overridable by flags.

`config/builder.toml` is the commented example of every field. Relative paths
are taken relative to the current directory. Environment variables override
paths and secrets: ``JPKI_VA_STORE``, ``JPKI_VA_PKI``, ``JPKI_VA_FACTS_KEY``
(64 hex digits: the AES-256 key that seals the four facts; it wins over
``keys.facts_key_file``), and ``JPKI_VA_NATS_NKEY_SEED``, ``JPKI_VA_NATS_TLS_CA``,
``_CERT``, ``_KEY`` (the NATS credential's files, `crlbuilder.natsauth`; checked when
``input.source`` names servers).
"""

from __future__ import annotations

import argparse
import functools
import os
from pathlib import Path
from typing import Annotated, Any, Final, Literal

import msgspec

from crlbuilder.model import Category, Family
from crlbuilder.natsauth import ENV as NATS_ENV
from crlbuilder.natsauth import NatsAuth, NatsAuthError, check_credential
from crlbuilder.natsservers import parse_servers
from crlbuilder.options import ConfigError, bounds, convert, read_toml
from crlbuilder.seal import read_facts_key

Positive = Annotated[int, msgspec.Meta(gt=0)]
NonNegative = Annotated[int, msgspec.Meta(ge=0)]

MAX_INTERVAL_SECONDS: Final = 86_400
"""The longest wait or pace of a loop (spool scans, a stream's tail, a tick, a pre-signing
slice): a day. Beyond it a value is a mistake, and an infinite one (TOML's ``inf``) failed
the follow loop after its start-up build (``OverflowError`` from the wait)."""
MAX_PERIOD_SECONDS: Final = 366 * 86_400
"""The longest validity, cycle or window in seconds (an OCSP answer's, a CRL's, the stream's
duplicate window, a kept spool file): a year. A larger one dated a CRL past year 9999 and
failed the build after its commit."""
MAX_DAYS: Final = 36_525
"""The longest number of days (a retention, a CRL file's keeping, a token's validity, the
changes feed): a century, which every date the store computes still holds."""

Interval = Annotated[float, msgspec.Meta(gt=0, le=MAX_INTERVAL_SECONDS)]
IntervalOrZero = Annotated[float, msgspec.Meta(ge=0, le=MAX_INTERVAL_SECONDS)]
Period = Annotated[int, msgspec.Meta(gt=0, le=MAX_PERIOD_SECONDS)]
PeriodOrZero = Annotated[int, msgspec.Meta(ge=0, le=MAX_PERIOD_SECONDS)]
Days = Annotated[int, msgspec.Meta(gt=0, le=MAX_DAYS)]


DEFAULT_CHANGES_KEEP_DAYS: Final = 31
"""Days the changes feed keeps a loss of effect (`Commit.prune_changes`), unless configured."""


class _Section(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    pass


class StoreSection(_Section):
    path: str = "var/store"
    """The LMDB environment directory (created on first build)."""
    map_size_gib: Positive = 64
    """Address space reserved for the store; a sparse file, only what is written costs."""
    changes_keep_days: Days = DEFAULT_CHANGES_KEEP_DAYS
    """How long the changes feed (``GET /v1/changes``) keeps each loss of effect: a party
    whose cursor is older re-reads the status of its whole watch list (docs/store.md)."""


class PkiSection(_Section):
    manifest: str = "var/pki"
    """The PKI directory holding pki.json (issuers, CA keys, OCSP signers)."""


class InputSection(_Section):
    paths: list[str] = []
    """Record files or directories (each directory's *.jsonl in file-name order)."""
    spool: str = ""
    """A spool directory `--follow` watches; each file is removed once committed (see below)."""
    spool_keep_seconds: PeriodOrZero = 0
    """How long an applied spool file (four facts in clear) is kept in the spool's done/
    (mode 0700): 0 removes it once its records are committed; N keeps it N seconds."""
    source: str = ""
    """The record stream instead of files: ``nats://HOST:PORT[,nats://HOST:PORT...]``, the
    NATS JetStream servers carrying it (`crlbuilder.stream`; names in ``[stream]``)."""
    follow_interval: Interval = 1.0
    """Seconds between spool scans under --follow."""
    quarantine: str = "var/build/quarantine.jsonl"
    """Where refusals go: record id, file name, line, field, reason; no content (mode 0600)."""
    notices: str = "var/build/notices.jsonl"
    """Holder notifications (Act §15(2)) and public announcements (Act §15(3)) due."""
    batch_size: Positive = 50_000
    """Records per write transaction."""
    registry: str = ""
    """The responder's registry of parties (TOML): a consent (Act §18(3)) must name one of its
    署名検証者等. Empty: every consent grant is quarantined (withdrawals still apply)."""


class StreamSection(_Section):
    """The record stream on NATS JetStream (`crlbuilder.stream`), used when ``input.source``
    names its servers."""

    name: str = "JPKI_RECORDS"
    """The JetStream stream."""
    subject: str = "jpki.records"
    """The subject its records are published on."""
    durable: str = ""
    """This node's durable consumer (one per node: each node applies the whole stream).
    Empty: ``node-`` and the host name (stable in a StatefulSet: ``jpki-va-0``...)."""
    replicas: Annotated[int, msgspec.Meta(ge=0, le=5)] = 0
    """Copies of the stream kept by the cluster; 0: three when the cluster has three servers or
    more, else one."""
    duplicate_window_seconds: Period = 86_400
    """How long JetStream remembers a message id (``Nats-Msg-Id``: one publication's, the line's
    place in it and the record id) to drop what its publisher sent again; a record another
    publication sends again is stored and applied once (the store's ``applied``), or judged
    again if it was refused."""
    ack_wait_seconds: Period = 300
    """How long the server waits for this node's acknowledgement before delivering again."""
    tick_seconds: IntervalOrZero = 0.0
    """Publish a tick (the stream's time, which dates lapses and erasures on every node) this
    often, and when a 30-day lapse or an erasure past retention falls due; 0: this node
    publishes none. Set it on one node,
    the CRL signer."""
    crl_bucket: str = "JPKI_CRLS"
    """The object store bucket of CRL files: the node with ``crl.enabled`` (the one holding
    the CA keys) ships each CRL it signs there; a node with ``crl.enabled = false`` fetches
    them into its CRL directory and store (`crlbuilder.crl.shipping`). Empty: neither."""
    snapshot_bucket: str = "JPKI_SNAPSHOTS"
    """The object store bucket of store snapshots (`crlbuilder snapshot put|get`): a new
    node starts from the latest and applies the stream after it."""
    tail_wait_seconds: Interval = 5.0
    """A batch whose publisher stopped before marking its end is committed after this many
    seconds with nothing more to read."""
    nats_nkey_seed: str = ""
    """The NKey user seed file (``SU...``, mode 0600) this node signs the NATS server's nonce
    with; the server knows the user by its public key (`crlbuilder.natsauth`). Overridden by
    ``JPKI_VA_NATS_NKEY_SEED``."""
    nats_tls_ca: str = ""
    """The CA file the NATS servers' certificates are checked against (``JPKI_VA_NATS_TLS_CA``);
    set: the connection is TLS."""
    nats_tls_cert: str = ""
    """This node's client certificate for NATS (with ``nats_tls_key``; ``JPKI_VA_NATS_TLS_CERT``)."""
    nats_tls_key: str = ""
    """Its private key, mode 0600 (``JPKI_VA_NATS_TLS_KEY``). Without a seed or a client
    certificate, only NATS servers on loopback are accepted (anonymous, with a warning)."""
    nats_inbox: str = ""
    """This NATS user's own inbox prefix, ``_INBOX_<role>[_<node>]`` as `crlbuilder nats-config`
    writes beside each user (``JPKI_VA_NATS_INBOX``): the shipped servers let a user read below
    its own only. Empty: nats-py's ``_INBOX``."""

    def nats_auth(self) -> NatsAuth:
        """The NATS credential these keys name (the environment wins when the cluster is joined)."""
        return NatsAuth(
            self.nats_nkey_seed,
            self.nats_tls_ca,
            self.nats_tls_cert,
            self.nats_tls_key,
            self.nats_inbox,
        )


class KeysSection(_Section):
    facts_key_file: str = ""
    """File holding the 32-byte AES key (64 hex digits) sealing the four facts. Mode 0600."""


class OcspSection(_Section):
    presign: bool = True
    """Pre-sign the answers of revoked serials at build time."""
    validity_seconds: Period = 86_400
    """nextUpdate - thisUpdate of pre-signed answers."""
    refresh_before_seconds: PeriodOrZero = 21_600
    """Re-sign a stored answer when less than this remains before its nextUpdate (or
    `crlbuilder.presign.LEAD_FACTOR` times its issuer's last walk, when longer)."""
    sign_workers: NonNegative = 0
    """Processes that sign in parallel (0: one per core)."""
    presign_slice_seconds: IntervalOrZero = 5.0
    """In a follow loop, pre-signing that reads every CRL entry of an issuer (its answers
    falling due, a new delegate) stops after about this many seconds and goes on at the loop's
    next turn, so that records go on being applied meanwhile; 0: no bound. A build without
    ``--follow`` always finishes it."""


class TokensSection(_Section):
    """特定利用者証明検証者証明符号 (Act §38-3): the requests the responder queues, the tokens
    the builder issues (`crlbuilder.tokens`)."""

    requests: str = ""
    """The directory where the responder queues token requests (``<id>.json``); empty: no
    token is issued (revocations on the registry's approvals still run)."""
    issued: str = ""
    """The directory where issued tokens are written (``<id>.pem``) for the responder."""
    validity_days: Days = 365
    """A token's longest validity; it never outlasts its party's approval period."""


DEFAULT_RETENTION_DAYS: Final = 3650


def _default_retention() -> dict[str, int]:
    return {f.value: DEFAULT_RETENTION_DAYS for f in Family}


class CrlSection(_Section):
    enabled: bool = True
    """Produce CRLs (失効情報ファイル) after each build."""
    directory: str = "var/crl"
    """Where produced CRL files are kept."""
    cycle_seconds: Period = 86_400
    """nextUpdate - thisUpdate of full CRLs: how often they are made (定期的に作成, Act §16,
    §16-15, §35, §35-15); not a party's agreed cycle (提供の周期, Ord §31(2), the registry's
    ``crl_cycle_seconds``)."""
    delta: bool = True
    """Produce delta CRLs between full ones (freshestCRL points at them)."""
    delta_cycle_seconds: Period = 3_600
    """nextUpdate - thisUpdate of delta CRLs."""
    full_every_seconds: Period = 86_400
    """Produce a new full CRL when the last is older than this; deltas in between."""
    keep_days: Days = 365
    """How many days each produced CRL file (失効情報ファイル) is kept (its own retention,
    Act §16: これを作成した日から), counted from the day after the day it was made
    (初日不算入, Civil Code §140, `crlbuilder.periods`)."""
    retention_days: dict[str, Days] = msgspec.field(default_factory=_default_retention)
    """Per family: how many days a revocation record is kept and listed (政令で定める期間; not in
    our texts), counted from the day after the day it was recorded (記録をした日から, 初日不算入:
    Civil Code §140-§141, `crlbuilder.periods`); the default of every category of the family.
    Whole days only: the law counts days, not seconds."""
    retention_days_by_category: dict[str, dict[str, Days]] = {}
    """Per family and legal category (request, resident-change, recording-error, ca-compromise,
    card-cascade): overrides ``retention_days``. Each category has its own article and period
    (Act §11-§14, §16-10-§16-13, §30-§33, §35-10-§35-13)."""
    erased_answer: Literal["unknown", "revoked"] = "unknown"
    """What OCSP answers for a serial whose revocation record passed its retention and was erased
    (Ord §70(1)(iii)): ``unknown`` (nothing of the record is kept or provided) or ``revoked``
    (the revocation time is kept, without reason or category)."""

    def retention_period_days(self, family: Family, category: Category) -> int:
        """How many days a revocation record of ``category`` for a ``family`` certificate is
        kept, counted from the day after the day it was recorded (`crlbuilder.periods`)."""
        days = self.retention_days_by_category.get(family.value, {}).get(category.value)
        if days is None:
            days = self.retention_days.get(family.value, DEFAULT_RETENTION_DAYS)
        return days


class BuilderConfig(_Section):
    store: StoreSection = msgspec.field(default_factory=StoreSection)
    pki: PkiSection = msgspec.field(default_factory=PkiSection)
    input: InputSection = msgspec.field(default_factory=InputSection)
    keys: KeysSection = msgspec.field(default_factory=KeysSection)
    stream: StreamSection = msgspec.field(default_factory=StreamSection)
    ocsp: OcspSection = msgspec.field(default_factory=OcspSection)
    crl: CrlSection = msgspec.field(default_factory=CrlSection)
    tokens: TokensSection = msgspec.field(default_factory=TokensSection)


# flag name -> (section, field); every option is also a flag
FLAGS: Final[dict[str, tuple[str, str]]] = {
    "store": ("store", "path"),
    "map-size-gib": ("store", "map_size_gib"),
    "changes-keep-days": ("store", "changes_keep_days"),
    "pki": ("pki", "manifest"),
    "input": ("input", "paths"),
    "spool": ("input", "spool"),
    "source": ("input", "source"),
    "stream": ("stream", "name"),
    "stream-subject": ("stream", "subject"),
    "durable": ("stream", "durable"),
    "stream-replicas": ("stream", "replicas"),
    "tick-seconds": ("stream", "tick_seconds"),
    "crl-bucket": ("stream", "crl_bucket"),
    "snapshot-bucket": ("stream", "snapshot_bucket"),
    "follow-interval": ("input", "follow_interval"),
    "spool-keep-seconds": ("input", "spool_keep_seconds"),
    "quarantine": ("input", "quarantine"),
    "notices": ("input", "notices"),
    "batch-size": ("input", "batch_size"),
    "registry": ("input", "registry"),
    "facts-key-file": ("keys", "facts_key_file"),
    "presign": ("ocsp", "presign"),
    "ocsp-validity-seconds": ("ocsp", "validity_seconds"),
    "ocsp-refresh-before-seconds": ("ocsp", "refresh_before_seconds"),
    "sign-workers": ("ocsp", "sign_workers"),
    "presign-slice-seconds": ("ocsp", "presign_slice_seconds"),
    "crl": ("crl", "enabled"),
    "crl-dir": ("crl", "directory"),
    "crl-cycle-seconds": ("crl", "cycle_seconds"),
    "delta-crl": ("crl", "delta"),
    "delta-cycle-seconds": ("crl", "delta_cycle_seconds"),
    "full-every-seconds": ("crl", "full_every_seconds"),
    "crl-keep-days": ("crl", "keep_days"),
    "erased-answer": ("crl", "erased_answer"),
    "token-requests": ("tokens", "requests"),
    "token-issued": ("tokens", "issued"),
    "token-validity-days": ("tokens", "validity_days"),
}


HELP: Final[dict[str, str]] = {
    "store": "the status store directory (LMDB; created by the first build, mode 0700)",
    "map-size-gib": "address space reserved for the store, GiB (a sparse file: only what is "
    "written uses disk)",
    "changes-keep-days": "days the changes feed (GET /v1/changes) keeps each loss of effect",
    "pki": "the PKI directory holding pki.json (CA certificates and keys, OCSP signers)",
    "input": "a record file, or a directory whose *.jsonl files are read in name order",
    "spool": "the spool directory `--follow` watches for record files",
    "source": "the record stream: nats://HOST:PORT[,nats://HOST:PORT...] (NATS JetStream); "
    "records come from it instead of input.paths",
    "stream": "the JetStream stream carrying the records",
    "stream-subject": "the subject the records are published on",
    "durable": "this node's durable consumer of the stream (empty: node- and the host name)",
    "stream-replicas": "copies of the stream the cluster keeps, 0 to 5 (0: three on a "
    "cluster of three servers or more, else one)",
    "tick-seconds": "publish the stream's time this often (set it on the CRL signer only); "
    "0: publish none",
    "crl-bucket": "the object store bucket through which CRL files go from the signer to the "
    "other nodes (empty: none)",
    "snapshot-bucket": "the object store bucket of store snapshots (`crlbuilder snapshot`)",
    "follow-interval": "seconds between spool scans under --follow",
    "spool-keep-seconds": "seconds an applied spool file is kept in spool/done/ (mode 0700); "
    "0: removed as soon as its records are committed",
    "quarantine": "the file of refused lines (record id, file, line, field, reason; never the "
    "line's content; mode 0600)",
    "notices": "the file of holder notifications (Act §15(2)) and public announcements "
    "(Act §15(3)) due (mode 0600)",
    "batch-size": "records per write transaction",
    "registry": "the responder's registry of parties (TOML); a consent record (Act §18(3)) is "
    "accepted only if it names a 署名検証者 or 団体署名検証者 registered there; "
    "without a registry every consent grant is quarantined (withdrawals still apply)",
    "facts-key-file": "file of the AES-256 key sealing the four facts: 64 hex digits, mode "
    "0600 (`crlbuilder facts-key` makes one; JPKI_VA_FACTS_KEY wins over it)",
    "presign": "pre-sign the OCSP answers of revoked serials",
    "ocsp-validity-seconds": "nextUpdate - thisUpdate of pre-signed OCSP answers, seconds",
    "ocsp-refresh-before-seconds": "re-sign a stored answer when less than this many seconds "
    "remain before its nextUpdate",
    "sign-workers": "processes that sign in parallel (0: one per core)",
    "presign-slice-seconds": "in a follow loop (and its start-up build), pre-signing that "
    "reads every CRL entry stops after about this many seconds and goes on at the next turn, "
    "so that records keep being applied; 0: no bound",
    "crl": "produce CRLs (失効情報ファイル) after each build",
    "crl-dir": "where CRL files are written (and archived under archive/)",
    "crl-cycle-seconds": "nextUpdate - thisUpdate of full CRLs (made periodically, 定期的に作成, Act §16), seconds",
    "delta-crl": "produce delta CRLs between full ones",
    "delta-cycle-seconds": "nextUpdate - thisUpdate of delta CRLs, seconds",
    "full-every-seconds": "a new full CRL when the last one is older than this, seconds",
    "crl-keep-days": "days each produced CRL file is kept",
    "erased-answer": "what OCSP answers for a serial whose revocation record passed its "
    "retention and was erased: unknown or revoked",
    "token-requests": "the directory where the responder queues token requests (empty: no "
    "token is issued)",
    "token-issued": "the directory where issued tokens are written (<id>.pem)",
    "token-validity-days": "a token's longest validity, days",
}
"""What each flag's help says after its section.field name; `add_arguments` adds the default."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """One flag per option; a flag given on the command line wins over the file."""
    g = parser.add_argument_group("configuration (each overrides the file's value)")
    g.add_argument("--config", type=Path, help="TOML configuration file (see config/builder.toml)")
    for flag, (section, name) in FLAGS.items():
        field_type = _field_type(section, name)
        dest = flag.replace("-", "_")
        shown = _shown_default(section, name)
        if limits := bounds(_annotation(section, name)):
            shown += f"; {limits}"
        help_text = f"{section}.{name}: {HELP[flag]} (default: {shown})"
        if field_type is bool:
            g.add_argument(
                f"--{flag}",
                dest=dest,
                action=argparse.BooleanOptionalAction,
                default=None,
                help=help_text,
            )
        elif field_type is list:
            g.add_argument(
                f"--{flag}",
                dest=dest,
                action="append",
                default=None,
                metavar="PATH",
                help=help_text + "; repeatable",
            )
        else:
            g.add_argument(f"--{flag}", dest=dest, type=field_type, default=None, help=help_text)


def _shown_default(section: str, name: str) -> str:
    """A field's default as ``--help`` says it."""
    default = getattr(getattr(BuilderConfig(), section), name)
    if isinstance(default, bool):
        return "on" if default else "off"
    if default in ("", []):
        return "none"
    return str(default)


@functools.cache
def _annotation(section: str, name: str) -> object:
    """The declared type of ``section.name`` (with its msgspec bounds); kept, as resolving a
    struct's annotations costs about as much as the rest of building the parser."""
    section_type = type(getattr(BuilderConfig(), section))
    return next(f.type for f in msgspec.structs.fields(section_type) if f.name == name)


def _field_type(section: str, name: str) -> type:
    default = getattr(getattr(BuilderConfig(), section), name)
    return type(default) if not isinstance(default, list) else list


def load_config(path: Path | None, args: argparse.Namespace | None = None) -> BuilderConfig:
    """Read ``path`` (optional), apply flags from ``args``, then environment overrides."""
    data: dict[str, Any] = read_toml(path) if path is not None else {}
    given: dict[str, str] = {}
    """Dotted field -> the flag or variable that set it: an error names where the value is."""
    if args is not None:
        for flag, (section, name) in FLAGS.items():
            value = getattr(args, flag.replace("-", "_"), None)
            if value is not None:
                data.setdefault(section, {})[name] = value
                given[f"{section}.{name}"] = f"--{flag}"
    env = {
        "JPKI_VA_STORE": ("store", "path"),
        "JPKI_VA_PKI": ("pki", "manifest"),
        **{var: ("stream", "nats_" + name) for name, var in NATS_ENV.items()},
    }
    for var, (section, name) in env.items():
        if os.environ.get(var):
            data.setdefault(section, {})[name] = os.environ[var]
            given[f"{section}.{name}"] = var
    source = str(path) if path is not None else "<configuration>"
    crl = data.get("crl")
    if isinstance(crl, dict) and "retention_seconds" in crl:
        raise ConfigError(
            source,
            "crl.retention_seconds",
            "retention is whole days counted from the day after the record's (Civil Code "
            "§140): set crl.retention_days (seconds / 86400, rounded up) instead",
        )
    try:
        cfg = convert(data, BuilderConfig, source)
    except ConfigError as e:
        origin = next(
            (o for f, o in given.items() if e.field == f or e.field.startswith(f + ".")), None
        )
        if origin is None:
            raise
        raise ConfigError(origin, e.field, e.problem) from None
    unknown = set(cfg.crl.retention_days) - {f.value for f in Family}
    if unknown:
        raise ConfigError(source, "crl.retention_days", f"names unknown families {sorted(unknown)}")
    for fam, by_category in cfg.crl.retention_days_by_category.items():
        where = f"crl.retention_days_by_category.{fam}"
        try:
            family = Family(fam)
        except ValueError:
            raise ConfigError(source, where, "unknown family") from None
        for cat in by_category:
            try:
                category = Category(cat)
            except ValueError:
                raise ConfigError(source, where, f"unknown category {cat!r}") from None
            if not category.applies_to(family):
                raise ConfigError(
                    source,
                    where,
                    f"category {cat} does not apply to {fam} certificates "
                    "(it has no such article in the Act)",
                )
    if cfg.input.source:  # a credential that will not do is refused here, before connecting
        try:
            parse_servers(cfg.input.source)
        except ValueError as e:  # the server list's own error first: nothing to credit
            raise ConfigError(source, "input.source", str(e)) from None
        try:
            check_credential(cfg.stream.nats_auth(), cfg.input.source)
        except NatsAuthError as e:
            raise ConfigError(source, "stream.nats_*", str(e)) from None
    return cfg


def facts_key(cfg: BuilderConfig) -> bytes:
    """The AES-256 key sealing the four facts: JPKI_VA_FACTS_KEY, else keys.facts_key_file
    (`crlbuilder.seal.read_facts_key`, which the responder reads it with too)."""
    path = Path(cfg.keys.facts_key_file) if cfg.keys.facts_key_file else None
    return read_facts_key(path, field="keys.facts_key_file")


def write_facts_key(path: Path) -> None:
    """Create a new random facts key file (mode 0600); refuses to overwrite one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as f:
        f.write(os.urandom(32).hex() + "\n")
