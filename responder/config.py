"""The responder's configuration: one TOML file validated into msgspec Structs.

Owns `ResponderConfig` and its sections, `load_config` (defaults < TOML file <
environment < command-line overrides), and the mapping of command-line flags
onto fields (`add_arguments`, `overrides_from_args`). Every field is documented
here and in ``config/responder.toml``. Unknown fields are errors, and every
error names the file and the field (``responder.toml: server.port: Expected
int, got str``). Relative paths are kept as written and resolved against the
process's working directory when used, so the demo's ``var/demo/...`` paths
work from the repository root.

Environment variables override paths (and, later, secrets):
``JPKI_VA_STORE`` (store.path), ``JPKI_VA_PKI`` (store.pki) and
``JPKI_VA_REGISTRY`` (registry.path).
"""

from __future__ import annotations

import argparse
import ipaddress
import os
from collections.abc import Mapping
from pathlib import Path
from types import UnionType
from typing import Annotated, Any, Final, Literal, Union, get_args, get_origin

import msgspec

from crlbuilder.natsauth import NatsAuth, NatsAuthError, check_credential
from crlbuilder.natsservers import parse_servers
from crlbuilder.options import ConfigError, bounds, convert, read_toml

__all__ = [  # ConfigError is crlbuilder.options' (one for both binaries), named here for callers
    "ENV_OVERRIDES",
    "FIELD_PATHS",
    "FIELD_TYPES",
    "ConfigError",
    "GroupConfig",
    "LedgerConfig",
    "LimitsConfig",
    "LogConfig",
    "MetricsConfig",
    "OcspConfig",
    "RegistryConfig",
    "ResponderConfig",
    "ServerConfig",
    "StoreConfig",
    "TlsConfig",
    "WatchConfig",
    "add_arguments",
    "flag_fields",
    "load_config",
    "overrides_from_args",
]

ClientCertMode = Literal["none", "optional", "required"]
AccessLogMode = Literal["off", "sampled", "all"]
LogLevel = Literal["debug", "info", "warning", "error"]
SigningMode = Literal["threads", "loop", "processes"]

Port = Annotated[int, msgspec.Meta(ge=0, le=65535)]
PositiveInt = Annotated[int, msgspec.Meta(ge=1)]
MAX_SECONDS: Final = 86_400
"""The longest timeout or interval (a day): beyond it a value is a mistake, and TOML's
``inf`` is no timeout at all (a header that never ends, a drain that never does)."""
PositiveSeconds = Annotated[float, msgspec.Meta(gt=0, le=MAX_SECONDS)]
MAX_VALIDITY_SECONDS: Final = 366 * 86_400
"""The longest validity of an answer (a year, as crlbuilder's ``ocsp.validity_seconds``): a
validity is no timeout, and a good answer valid for days is a deployment's choice."""

ENV_OVERRIDES: Final[Mapping[str, str]] = {
    "JPKI_VA_STORE": "store.path",
    "JPKI_VA_PKI": "store.pki",
    "JPKI_VA_REGISTRY": "registry.path",
    "JPKI_VA_NATS_NKEY_SEED": "cluster.nats_nkey_seed",
    "JPKI_VA_NATS_TLS_CA": "cluster.nats_tls_ca",
    "JPKI_VA_NATS_TLS_CERT": "cluster.nats_tls_cert",
    "JPKI_VA_NATS_TLS_KEY": "cluster.nats_tls_key",
    "JPKI_VA_NATS_INBOX": "cluster.nats_inbox",
}
"""Environment variable -> dotted field it overrides (between the file and the flags)."""

_HEADER_TOKEN: Final = frozenset("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyz")


class TlsConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """TLS the worker terminates itself ([server.tls]); off while ``cert`` is unset."""

    cert: Path | None = None
    """PEM server certificate chain (leaf first)."""
    key: Path | None = None
    """PEM private key of ``cert`` (mode 0600)."""
    client_ca: Path | None = None
    """PEM bundle of the CAs that issue the parties' client certificates."""
    client_cert: ClientCertMode = "none"
    """Ask for a client certificate: ``none``, ``optional`` (verified when sent) or ``required``."""

    def __post_init__(self) -> None:
        if (self.cert is None) != (self.key is None):
            raise ValueError("cert and key must be set together")
        if self.client_cert != "none":
            if self.cert is None:
                raise ValueError("client_cert needs TLS (cert and key)")
            if self.client_ca is None:
                raise ValueError(f"client_cert = {self.client_cert!r} needs client_ca")

    @property
    def enabled(self) -> bool:
        """True when the worker terminates TLS."""
        return self.cert is not None


class LimitsConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Per-connection and per-worker limits of the HTTP layer ([server.limits])."""

    max_body_bytes: PositiveInt = 65536
    """Largest request body; larger (by Content-Length or as it arrives) gets 413 and a close."""
    max_json_body_bytes: PositiveInt = 24 << 20
    """Largest body of a /v1 JSON request that carries a credential (bearer token or client
    certificate): a batch of 10,000 certificates given as base64 DER is about 20 MB, by
    issuer and serial about 600 KB. Requests without a credential keep ``max_body_bytes``."""
    max_header_bytes: PositiveInt = 8192
    """Largest request line plus header fields; larger gets 431 and a close."""
    header_timeout: PositiveSeconds = 5.0
    """Seconds a request may take from its first byte to its last header (the first request
    of a connection: from the connection's opening); past it 408 and a close. A connection
    that sends nothing is closed after it."""
    body_timeout: PositiveSeconds = 5.0
    """Seconds from a request's last header to the last byte of its body, however the body
    trickles in (the deadline is not moved by each chunk); past it 408 and a close."""
    idle_timeout: PositiveSeconds = 30.0
    """Seconds an idle keep-alive connection is kept open."""
    max_connections: PositiveInt = 10000
    """Open connections per worker; beyond it a new connection first displaces the oldest
    connection not yet attributed to a party, else gets 503 and is closed."""
    max_unattributed: PositiveInt | None = None
    """Of ``max_connections``, how many may be open without having been attributed to a
    registered party (no request on them proven by a client certificate, bearer token or
    signed request yet); None means a quarter of ``max_connections`` (at least 1). A new
    connection beyond it displaces the oldest unattributed connection that waits on its
    client (503 and a close), so connections that never prove anything cannot take the
    capacity parties need."""
    drain_timeout: PositiveSeconds = 10.0
    """On SIGTERM, seconds a worker waits for in-flight requests before cutting connections."""
    public_per_second: PositiveInt = 100
    """Requests per second one worker answers on the public routes (/healthz, /readyz,
    /announcements, /ca/, /reports/, a path it does not serve) for clients that prove no
    registered party (`responder.publicbound`); beyond it and ``public_burst``: 429 with
    Retry-After and the connection not read for that second. A party's requests (client
    certificate, bearer token) are never counted; a probe's (the first request of a
    connection to /healthz or /readyz) is always answered."""
    public_burst: PositiveInt = 200
    """How many such requests one worker answers at once after a quiet spell (the bucket's
    size); at least ``public_per_second``."""

    def __post_init__(self) -> None:
        if self.max_unattributed is not None and self.max_unattributed > self.max_connections:
            raise ValueError("max_unattributed must not exceed max_connections")
        if self.public_burst < self.public_per_second:
            raise ValueError("public_burst must be at least public_per_second")

    @property
    def unattributed_budget(self) -> int:
        """``max_unattributed``, or a quarter of ``max_connections`` when unset."""
        if self.max_unattributed is not None:
            return self.max_unattributed
        return max(1, self.max_connections // 4)


class ServerConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Where and how the responder listens ([server])."""

    hosts: tuple[str, ...] = ("127.0.0.1",)
    """Addresses to listen on, e.g. ``["127.0.0.1", "::1"]``; all share ``port``."""
    port: Port = 8080
    """TCP port; 0 picks a free one (printed in the ``listening on`` line)."""
    workers: Annotated[int, msgspec.Meta(ge=0)] = 0
    """Worker processes; 0 means one per CPU (``os.cpu_count()``)."""
    trusted_proxies: tuple[str, ...] = ()
    """Peer addresses or networks (TLS-terminating proxies) whose ``client_cert_header``
    is believed; from any other peer that header is dropped."""
    client_cert_header: str = "client-cert"
    """Header carrying the client certificate from a trusted proxy: RFC 9440
    ``:base64-DER:``, URL-escaped PEM (nginx ``$ssl_client_escaped_cert``) or base64 DER."""
    reuseport: bool = True
    """Each worker also listens on its own SO_REUSEPORT socket, so the kernel spreads new
    connections evenly over the workers (false: all workers accept from one shared socket)."""
    tls: TlsConfig = msgspec.field(default_factory=TlsConfig)
    limits: LimitsConfig = msgspec.field(default_factory=LimitsConfig)

    def __post_init__(self) -> None:
        if not self.hosts:
            raise ValueError("hosts must list at least one address")
        for proxy in self.trusted_proxies:
            try:
                ipaddress.ip_network(proxy, strict=False)
            except ValueError:
                raise ValueError(f"trusted_proxies: {proxy!r} is not an address") from None
        name = self.client_cert_header
        if not name or not set(name) <= _HEADER_TOKEN:
            raise ValueError("client_cert_header must be a lower-case header name")

    @property
    def worker_count(self) -> int:
        """The number of workers to start (``workers``, or one per CPU when 0)."""
        return self.workers or os.cpu_count() or 1


class StoreConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The read-only status store and the PKI ([store])."""

    path: Path = Path("var/demo/store")
    """LMDB environment directory written by crlbuilder (env JPKI_VA_STORE)."""
    pki: Path = Path("var/demo/pki")
    """Directory holding the PKI manifest ``pki.json`` (env JPKI_VA_PKI)."""
    crl_dir: Path | None = None
    """Directory of the CRL files crlbuilder produces, served at /crl/ (none: /crl/ is 404)."""
    facts_key_file: Path | None = None
    """File of the AES-256 key (64 hex digits, mode 0600) that opens the four facts sealed in
    the store, for 特定署名用電子証明書記録情報 (Act §18(3), /v1/record-info); env
    JPKI_VA_FACTS_KEY holds the key itself and wins. Neither: /v1/record-info answers 503."""


class RegistryConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The registered parties ([registry]): signature verifiers (署名検証者, Act §17),
    group signature verifiers (団体署名検証者, Act §17(5)), login verifiers
    (利用者証明検証者, Act §36), their agreements (取決め) and suspensions (提供の停止,
    Act §18(6), §37(4))."""

    path: Path = Path("var/demo/registry.toml")
    """TOML file of registered parties (env JPKI_VA_REGISTRY); re-read on SIGHUP."""


class OcspConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Bounds and freshness policy of OCSP answers ([ocsp])."""

    max_certids: PositiveInt = 16
    """Most CertIDs accepted in one OCSP request."""
    max_nonce: Annotated[int, msgspec.Meta(ge=32, le=128)] = 128
    """Longest nonce accepted, in bytes: 32 to 128. A nonce is 1 to 128 bytes (RFC 9654 §2.1);
    conforming clients send 32, which a responder must accept, so no lower bound is allowed
    (a shorter one refused every such client's nonce request with malformedRequest)."""
    good_cache_entries: Annotated[int, msgspec.Meta(ge=0)] = 20000
    """Signed "good" answers kept per worker (0 disables the cache). Each holds ~1.7 KB, so
    the default bounds a worker's cache at ~34 MB: the one part of a worker's memory that grows
    with traffic (the store itself is mapped, shared page cache)."""
    good_validity_seconds: Annotated[int, msgspec.Meta(ge=1, le=MAX_VALIDITY_SECONDS)] = 3600
    """Freshly signed answers: thisUpdate is the signing time, nextUpdate is
    thisUpdate plus this many seconds."""
    signing: SigningMode = "threads"
    """Where a worker makes fresh signatures (`responder.loopsigning`): ``threads``
    (``sign_threads`` of them: the event loop stays free for other answers), or ``loop``
    (the event loop itself, one signature per iteration: 6-13% less CPU per fresh answer,
    but every other answer of the worker may wait for a signature and for the scheduler;
    a key in a token stays on the threads), or ``processes`` (``sign_processes`` signing
    processes per worker holding the keys, fed over pipes: `responder.procsigning`).
    Needs a restart."""
    sign_threads: Annotated[int, msgspec.Meta(ge=1, le=64)] = 2
    """Threads per worker making fresh signatures when ``signing`` is ``threads`` (needs a
    restart)."""
    sign_processes: Annotated[int, msgspec.Meta(ge=0, le=64)] = 0
    """Signing processes per worker when ``signing`` is ``processes``; 0: the machine's
    cores shared out between the workers (at least one each). Needs a restart."""
    sign_queue_per_party: Annotated[int, msgspec.Meta(ge=1, le=4096)] = 64
    """Fresh sign jobs one party may have waiting per worker; the signer (``signing``) takes
    the waiting jobs of the parties in turn (round-robin), and a job beyond this is answered
    OCSP tryLater (rule fair_share): the fair share of signing that every registered party
    gets, with or without a quota in its agreement (see `responder.signqueue`). Generous
    on purpose: a waiting request holds back its connection's next one, a refused one
    comes straight back and costs the worker again. Re-read on SIGHUP."""


class LogConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Logging ([log]): one JSON object per line on stderr, never request data."""

    level: LogLevel = "info"
    access_log: AccessLogMode = "off"
    """Per-request log lines: ``off``, ``sampled`` (``sample_rate`` of them) or ``all``."""
    sample_rate: Annotated[float, msgspec.Meta(ge=0.0, le=1.0)] = 0.01
    """Share of the requests logged when ``access_log = "sampled"``."""


class MetricsConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Prometheus metrics at /metrics on an admin listener of their own ([metrics]).

    See `responder.metrics`. The public port does not serve /metrics: a flood of
    scrapes there would take the workers' time from the registered parties. Changing
    ``enabled``, ``dir``, ``host`` or ``port`` needs a restart (SIGHUP does not apply them).
    """

    enabled: bool = True
    """Count requests and serve /metrics on ``host``:``port``; false: no per-request
    counting and no admin listener."""
    host: str = "127.0.0.1"
    """Address of the admin listener (loopback by default: only this machine's Prometheus
    or a local proxy reaches it)."""
    port: Port = 9482
    """TCP port of the admin listener; 0 picks a free one (printed in the ``metrics on``
    line)."""
    render_interval: Annotated[float, msgspec.Meta(ge=0.0, le=60.0)] = 1.0
    """A worker merges every worker's metric files (an expensive read) at most once per this
    many seconds; scrapes in between get the text it rendered last (0: every scrape renders)."""
    max_connections: PositiveInt = 16
    """Open connections per worker on the admin listener; beyond it 503 and a close."""
    dir: Path | None = None
    """Directory of prometheus_client's per-process files (PROMETHEUS_MULTIPROC_DIR); the
    master creates it (mode 0700) and empties it at start. Unset: a fresh private directory
    under the system's temporary directory, removed when the master exits (or, after the
    master was killed, by the next start). One directory per responder instance."""
    flush_interval: Annotated[float, msgspec.Meta(ge=0.05, le=60.0)] = 1.0
    """Seconds between flushes of a worker's local counts into the shared files: a request
    appears in /metrics at most this long after its answer was sent."""
    entries_interval: Annotated[float, msgspec.Meta(ge=0.0, le=MAX_SECONDS)] = 60.0
    """Least seconds between two recounts of the revoked entries per family and category
    (jpkiva_store_entries); a recount runs only after a new commit, in a background thread
    of the worker that answers the scrape, once for all workers."""


class LedgerConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The ledger (帳簿, Act §40) and the shared quota table ([ledger]); see `responder.ledger`."""

    dir: Path = Path("var/demo/ledger")
    """Directory of the workers' memory-mapped counter files, the merged SQLite ledger and the
    quota table (mode 0700). Each answered provision is counted here before it is sent."""
    collect_interval: PositiveSeconds = 10.0
    """Seconds between merges of the workers' files into the ledger (also on /reports)."""


class GroupConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Group mode ([group]): this appliance is a group's (団体署名検証者, Act §17(5), §20).

    Set by ``crlbuilder group init``. The issuers and the signing key come from the
    group's ``group.json`` (`crlbuilder.group.setup`) instead of the 機構's PKI manifest
    (``store.pki`` is not read); every answer is signed with the group's own responder
    key (RFC 6960 §4.2.2.2), and only the group's members (署名確認者, Act §20(1)) in its
    registry are answered. Needs a restart."""

    file: Path | None = None
    """The group's ``group.json``; unset: the 機構's appliance."""
    unlisted: Literal["good", "unknown"] = "good"
    """The status of a serial that is on no CRL (a CRL cannot tell a never-issued serial
    from a valid one): ``good`` (RFC 6960 §2.2: not revoked) or ``unknown``
    (docs/operations.md)."""
    member_requests_per_second: Annotated[int, msgspec.Meta(ge=0)] = 20
    """Each member's (署名確認者) requests per second on the routes the group answers from
    its own store (OCSP, ``/v1/status``, ``/v1/verify``), across the workers of this node,
    unless the member's registry entry gives its own (`responder.memberbound`); 0: no
    bound. Past it: OCSP ``tryLater``, /v1 429 with Retry-After (rule ``member_quota``)."""
    member_requests_per_day: Annotated[int, msgspec.Meta(ge=0)] = 0
    """Each member's requests per Japan calendar day on those routes, unless its registry
    entry gives its own; 0 (the default): no daily bound."""


class WatchConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The changes feed's watch lists ([watch]): ``POST /v1/watch``, ``GET /v1/changes``
    (`responder.v1.changes`, stored by `responder.v1.watchdb`)."""

    dir: Path | None = None
    """LMDB directory of the watch lists (mode 0700), written by every worker; unset:
    ``<ledger.dir>/watch``. Opened on the first /v1/watch or /v1/changes request."""
    secret_file: Path | None = None
    """File holding the 32-byte key (64 hex digits, mode 0600) the lists are hashed with
    (no serial or party in clear at rest); drawn when absent, except on a node of several
    (``[cluster] nats``), where it must be the one every node shares. Unset:
    ``<ledger.dir>/watch.secret``. Keep it apart from the lists' backups."""
    max_per_party: PositiveInt = 10_000_000
    """Certificates one party may watch."""
    map_size_gib: PositiveInt = 16
    """Address space reserved for the lists (sparse; ~40 bytes per watched certificate)."""
    replication_wait_seconds: Annotated[float, msgspec.Meta(gt=0, le=30)] = 2.0
    """On a node of several (``[cluster] nats``): how long a call waits for this node's lists
    to apply the watch stream (``POST /v1/watch`` its own batch, ``GET /v1/changes`` every
    batch registered anywhere before it) before answering 503 with Retry-After; also each
    call to the stream's servers (`responder.v1.watchstream`)."""
    scan_limit: PositiveInt = 50_000
    """Changes one read of the feed examines at most (the cursor then says where to go on):
    bounds a call's time after a mass revocation (an issuing-key compromise); about 0.2 s
    of one worker at the default (bench/README.md: ~260,000 entries/s)."""
    unbound_cursors: bool = True
    """Read the changes cursors issued before cursors were bound to their party (versions 1
    and 2: no counted mark, so they cannot spare a change from being counted; the answer
    carries a bound one). Turn it off once no party sends one any more
    (``jpkiva_changes_unbound_cursors_total{outcome="accepted"}`` flat for longer than a
    client keeps a cursor; a reload applies it): such a cursor is then refused 410
    ``cursor_expired``, the party told to resynchronise."""
    ready_requires_replication: bool = False
    """On a node of several (``[cluster] nats``): ``/readyz`` says not ready while this node's
    watch lists cannot be opened or stopped applying the watch stream for good (an operation
    made with another watch secret, one the stream lost, the stream made again:
    ``jpkiva_watch_replication_broken`` 1), not while they are merely behind. Off: /readyz
    does not follow the feed, whose calls answer 503 on such a node (docs/operations.md
    says when to turn it on: not ready takes the node's OCSP out of the balancer too)."""

    def lists_dir(self, ledger: LedgerConfig) -> Path:
        return self.dir if self.dir is not None else ledger.dir / "watch"

    def secret_path(self, ledger: LedgerConfig) -> Path:
        return self.secret_file if self.secret_file is not None else ledger.dir / "watch.secret"


class TokenConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """特定利用者証明検証者証明符号 (Act §38-3) ([token]): where POST /v1/token queues requests
    for crlbuilder and reads the tokens it issued (`responder.v1.token`); the same
    directories as crlbuilder's ``tokens.requests`` and ``tokens.issued``."""

    request_dir: Path | None = None
    """Directory the requests are queued in (``<id>.json``, mode 0600); unset: POST /v1/token
    answers 503 (no token can be issued)."""
    issued_dir: Path | None = None
    """Directory crlbuilder writes the issued tokens to (``<id>.pem``)."""
    max_per_party: PositiveInt = 16
    """The most tokens one party may hold at once: in force (good, unexpired) or queued for
    the builder. A new request past it is refused 409 ``token_limit`` until one expires or is
    revoked (a renewal with a new key is a new token: each lives ``tokens.validity_days``)."""


class V1Config(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The JSON API under /v1 ([v1]); see `responder.v1`."""

    answer_key: str = ""
    """The answer-signing key (JWS of every /v1 answer, `responder.v1.jws`): a PEM file
    (mode 0600) or a ``pkcs11:`` URI; "" for the PKI manifest's ``answer_key``."""
    answer_cert: Path | None = None
    """Its certificate (PEM); unset for the PKI manifest's ``answer_cert``. The file may hold
    a chain: the certificate, then its issuer's, each certifying the one before (RFC 7517
    §4.7): ``GET /v1/keys`` publishes it in ``x5c``."""
    answer_issuer: Path | None = None
    """The answer-signing certificate's issuer (PEM; then the issuer's own issuers, in order),
    when ``answer_cert``'s file holds the certificate alone: published after it in the JWK's
    ``x5c`` so a party can check kept answers offline against its trust anchor. The chain is
    checked at start (each certificate signed by the next)."""
    published_certs: list[Path] = []
    """Further answer-signing certificates (PEM, public: no key) listed in ``GET /v1/keys``
    beside the current one, for a rollover: the next key's before it signs (parties fetch
    it ahead), the previous key's after (the answers it signed still verify by ``kid``).
    Each must carry the answer-signing extended key usage, like ``answer_cert``."""
    verify_max_document_bytes: PositiveInt = 8 << 20
    """POST /v1/verify: the largest signed document, CMS or XML of one item (decoded
    octets); larger is 413 ``too_large`` naming the item (`responder.v1.verify`). The body
    as a whole is bounded by ``server.limits.max_json_body_bytes``."""


class ClusterConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Several nodes behind a load balancer ([cluster]); a single node leaves it as it is."""

    nats: str = ""
    """The NATS JetStream servers, ``nats://HOST:PORT[,nats://HOST:PORT...]``: the ledger is
    shipped to the service's ledger stream and /reports/ report the whole service
    (`responder.ledgerstream`); /readyz follows the record stream's lag. Empty: one node."""
    node: str = ""
    """This node's name on the ledger stream; empty: the host name."""
    nodes: Annotated[int, msgspec.Meta(ge=1, le=64)] = 1
    """Nodes that share each agreement's quotas: each node admits ceil(quota / nodes) per
    window (`responder.limits`), so the service admits at most quota + nodes - 1."""
    ledger_stream: str = "JPKI_LEDGER"
    """The JetStream stream of every node's ledger counts."""
    max_lag: Annotated[int, msgspec.Meta(ge=0)] = 1000
    """/readyz says not ready while the store is more than this many records behind the
    record stream (and once more when it falls that far behind), as this node's builder
    saw the stream (`responder.streamlag`)."""
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
        """The NATS credential these keys name (the environment wins when it is joined)."""
        return NatsAuth(
            self.nats_nkey_seed,
            self.nats_tls_ca,
            self.nats_tls_cert,
            self.nats_tls_key,
            self.nats_inbox,
        )


class ResponderConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The whole configuration of one responder process tree."""

    server: ServerConfig = msgspec.field(default_factory=ServerConfig)
    store: StoreConfig = msgspec.field(default_factory=StoreConfig)
    registry: RegistryConfig = msgspec.field(default_factory=RegistryConfig)
    ocsp: OcspConfig = msgspec.field(default_factory=OcspConfig)
    log: LogConfig = msgspec.field(default_factory=LogConfig)
    metrics: MetricsConfig = msgspec.field(default_factory=MetricsConfig)
    ledger: LedgerConfig = msgspec.field(default_factory=LedgerConfig)
    group: GroupConfig = msgspec.field(default_factory=GroupConfig)
    watch: WatchConfig = msgspec.field(default_factory=WatchConfig)
    v1: V1Config = msgspec.field(default_factory=V1Config)
    token: TokenConfig = msgspec.field(default_factory=TokenConfig)
    cluster: ClusterConfig = msgspec.field(default_factory=ClusterConfig)


def _dec_hook(type_: type, obj: object) -> object:
    if type_ is Path and isinstance(obj, str):
        if not obj:
            raise ValueError("empty path")
        return Path(obj)
    raise NotImplementedError(f"Expected `{type_.__name__}`")


def _set_dotted(tree: dict[str, Any], dotted: str, value: object, source: str) -> None:
    *sections, leaf = dotted.split(".")
    node = tree
    walked: list[str] = []
    for name in sections:
        walked.append(name)
        child = node.setdefault(name, {})
        if not isinstance(child, dict):
            raise ConfigError(source, ".".join(walked), "Expected a table")
        node = child
    node[leaf] = value


def _field_types(struct_type: type[msgspec.Struct], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for field in msgspec.structs.fields(struct_type):
        dotted = f"{prefix}{field.name}"
        if isinstance(field.type, type) and issubclass(field.type, msgspec.Struct):
            out.update(_field_types(field.type, dotted + "."))
        else:
            out[dotted] = field.type
    return out


FIELD_TYPES: Final[dict[str, Any]] = _field_types(ResponderConfig)
"""Every leaf field as a dotted path and its type."""
FIELD_PATHS: Final[tuple[str, ...]] = tuple(FIELD_TYPES)
"""Every leaf field as a dotted path, e.g. ``server.limits.max_body_bytes``."""


def load_config(
    path: Path | None,
    overrides: Mapping[str, object] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
) -> ResponderConfig:
    """Read ``path`` (or only defaults when None), then environment, then ``overrides``.

    ``overrides`` maps dotted field paths (``"server.port"``) to values, as
    `overrides_from_args` returns them. Raises `ConfigError` naming the file
    (or the environment variable, or the flag: ``--port``) and the field.
    """
    source = str(path) if path is not None else "<defaults>"
    tree: dict[str, Any] = read_toml(path) if path is not None else {}
    env = os.environ if environ is None else environ
    given: dict[str, str] = {}  # a field set by the environment or a flag: a bad value names it
    for var, dotted in ENV_OVERRIDES.items():
        from_env = env.get(var)
        if from_env:
            _set_dotted(tree, dotted, from_env, source)
            given[dotted] = var
    for dotted, value in (overrides or {}).items():
        if dotted not in FIELD_PATHS:
            raise ConfigError("<command line>", dotted, "no such field")
        _set_dotted(tree, dotted, value, source)
        # named as crlbuilder names it: the flag the operator typed, not only "the command line"
        given[dotted] = next((f.flag for f in _FLAGS if f.field == dotted), "<command line>")
    try:
        cfg = convert(tree, ResponderConfig, source, dec_hook=_dec_hook)
    except ConfigError as e:
        if e.field not in given:
            raise
        raise ConfigError(given[e.field], e.field, e.problem) from None
    if cfg.cluster.nats:  # a credential that will not do is refused here, not at each call
        try:
            parse_servers(cfg.cluster.nats)
        except ValueError as e:  # the server list's own error first: nothing to credit
            raise ConfigError(given.get("cluster.nats", source), "cluster.nats", str(e)) from None
        try:
            check_credential(cfg.cluster.nats_auth(), cfg.cluster.nats)
        except NatsAuthError as e:
            raise ConfigError(source, "cluster.nats_*", str(e)) from None
    return cfg


class _Flag(msgspec.Struct, frozen=True):
    """A command-line flag: its name, the dotted field it sets, its help. How it parses
    (a list, a choice, a switch, a number) follows from the field's type."""

    flag: str
    field: str
    help: str


_FLAGS: Final[tuple[_Flag, ...]] = (
    _Flag("--host", "server.hosts", "listen address (repeat for several)"),
    _Flag("--port", "server.port", "TCP port (0 picks a free one)"),
    _Flag("--workers", "server.workers", "worker processes (0: one per CPU)"),
    _Flag("--trusted-proxy", "server.trusted_proxies", "proxy allowed to pass a cert"),
    _Flag("--reuseport", "server.reuseport", "one SO_REUSEPORT socket per worker"),
    _Flag("--client-cert-header", "server.client_cert_header", "proxy's cert header"),
    _Flag("--tls-cert", "server.tls.cert", "PEM server certificate chain"),
    _Flag("--tls-key", "server.tls.key", "PEM server private key"),
    _Flag("--tls-client-ca", "server.tls.client_ca", "PEM CAs of client certificates"),
    _Flag("--tls-client-cert", "server.tls.client_cert", "ask for client certificates"),
    _Flag("--max-body-bytes", "server.limits.max_body_bytes", "largest request body"),
    _Flag("--max-json-body-bytes", "server.limits.max_json_body_bytes", "largest /v1 body"),
    _Flag("--max-header-bytes", "server.limits.max_header_bytes", "largest header"),
    _Flag("--header-timeout", "server.limits.header_timeout", "seconds to send headers"),
    _Flag("--body-timeout", "server.limits.body_timeout", "seconds to send a body"),
    _Flag("--idle-timeout", "server.limits.idle_timeout", "keep-alive idle seconds"),
    _Flag("--max-connections", "server.limits.max_connections", "connections per worker"),
    _Flag(
        "--max-unattributed",
        "server.limits.max_unattributed",
        "unattributed connections (unset: a quarter of --max-connections)",
    ),
    _Flag("--drain-timeout", "server.limits.drain_timeout", "seconds to drain on stop"),
    _Flag(
        "--public-per-second",
        "server.limits.public_per_second",
        "public-route requests a second per worker from clients proving no party (429 past it)",
    ),
    _Flag(
        "--public-burst",
        "server.limits.public_burst",
        "such requests a worker answers at once after a quiet spell",
    ),
    _Flag("--store", "store.path", "LMDB status store directory"),
    _Flag("--pki", "store.pki", "directory of the PKI manifest pki.json"),
    _Flag("--crl-dir", "store.crl_dir", "directory of CRL files served at /crl/"),
    _Flag("--facts-key-file", "store.facts_key_file", "key opening the sealed four facts"),
    _Flag("--registry", "registry.path", "TOML file of registered parties"),
    _Flag("--ledger-dir", "ledger.dir", "ledger (帳簿) and quota table directory"),
    _Flag("--ledger-collect-interval", "ledger.collect_interval", "seconds between ledger merges"),
    _Flag("--watch-dir", "watch.dir", "watch lists of the changes feed (LMDB directory)"),
    _Flag("--watch-secret-file", "watch.secret_file", "key file hashing the watch lists"),
    _Flag("--watch-max-per-party", "watch.max_per_party", "certificates one party may watch"),
    _Flag("--watch-map-size-gib", "watch.map_size_gib", "address space of the watch lists"),
    _Flag(
        "--watch-replication-wait",
        "watch.replication_wait_seconds",
        "several nodes: seconds a watch call waits for this node's lists (then 503)",
    ),
    _Flag("--watch-scan-limit", "watch.scan_limit", "changes one feed read examines"),
    _Flag(
        "--watch-unbound-cursors",
        "watch.unbound_cursors",
        "read changes cursors issued before cursors were bound to their party",
    ),
    _Flag(
        "--watch-ready-requires-replication",
        "watch.ready_requires_replication",
        "several nodes: /readyz not ready while the watch lists' replication is broken",
    ),
    _Flag("--answer-key", "v1.answer_key", "answer-signing key (/v1 JWS): PEM or pkcs11: URI"),
    _Flag("--answer-cert", "v1.answer_cert", "answer-signing certificate (PEM)"),
    _Flag(
        "--answer-issuer",
        "v1.answer_issuer",
        "answer-signing certificate's issuer (PEM, then its issuers): /v1/keys x5c chain",
    ),
    _Flag(
        "--published-cert",
        "v1.published_certs",
        "another answer-signing certificate /v1/keys lists, a rollover's (repeat for several)",
    ),
    _Flag(
        "--verify-max-document-bytes",
        "v1.verify_max_document_bytes",
        "/v1/verify: largest document of one item (413 above)",
    ),
    _Flag("--nats", "cluster.nats", "NATS servers of several nodes (nats://HOST:PORT,...)"),
    _Flag("--nats-nkey-seed", "cluster.nats_nkey_seed", "NATS NKey user seed file (0600)"),
    _Flag("--nats-tls-ca", "cluster.nats_tls_ca", "CA file of the NATS servers (TLS)"),
    _Flag("--nats-tls-cert", "cluster.nats_tls_cert", "client certificate for NATS"),
    _Flag("--nats-tls-key", "cluster.nats_tls_key", "its private key (0600)"),
    _Flag(
        "--nats-inbox", "cluster.nats_inbox", "this NATS user's own inbox (_INBOX_<role>_<node>)"
    ),
    _Flag("--node", "cluster.node", "this node's name on the ledger stream"),
    _Flag("--nodes", "cluster.nodes", "nodes sharing each agreement's quotas"),
    _Flag("--ledger-stream", "cluster.ledger_stream", "JetStream stream of ledger counts"),
    _Flag("--max-lag", "cluster.max_lag", "records behind the stream before not ready"),
    _Flag("--max-certids", "ocsp.max_certids", "CertIDs per OCSP request"),
    _Flag("--max-nonce", "ocsp.max_nonce", "longest OCSP nonce (bytes, 32 to 128)"),
    _Flag("--good-cache-entries", "ocsp.good_cache_entries", "cached good answers"),
    _Flag("--good-validity-seconds", "ocsp.good_validity_seconds", "nextUpdate offset"),
    _Flag("--sign-threads", "ocsp.sign_threads", "fresh-signing threads per worker"),
    _Flag(
        "--signing", "ocsp.signing", "where fresh signatures are made (threads, loop, processes)"
    ),
    _Flag(
        "--sign-processes", "ocsp.sign_processes", "signing processes per worker (0: cores/workers)"
    ),
    _Flag("--sign-queue-per-party", "ocsp.sign_queue_per_party", "a party's waiting sign jobs"),
    _Flag("--group", "group.file", "group mode: the group's group.json"),
    _Flag("--unlisted", "group.unlisted", "group mode: status of a serial on no CRL"),
    _Flag(
        "--member-requests-per-second",
        "group.member_requests_per_second",
        "group mode: each member's requests per second, unless its entry says (0: none)",
    ),
    _Flag(
        "--member-requests-per-day",
        "group.member_requests_per_day",
        "group mode: each member's requests per day, unless its entry says (0: none)",
    ),
    _Flag("--log-level", "log.level", "log level"),
    _Flag("--access-log", "log.access_log", "access log"),
    _Flag("--sample-rate", "log.sample_rate", "sampled access log rate (0..1)"),
    _Flag("--metrics", "metrics.enabled", "count requests and serve /metrics"),
    _Flag("--metrics-dir", "metrics.dir", "directory of the per-process metric files"),
    _Flag("--metrics-host", "metrics.host", "address of the admin listener (/metrics)"),
    _Flag("--metrics-port", "metrics.port", "port of the admin listener (0: any free)"),
    _Flag("--metrics-render-interval", "metrics.render_interval", "seconds between renders"),
    _Flag("--metrics-max-connections", "metrics.max_connections", "admin connections per worker"),
    _Flag("--metrics-flush-interval", "metrics.flush_interval", "seconds between flushes"),
    _Flag("--entries-interval", "metrics.entries_interval", "seconds between recounts"),
    _Flag("--token-requests", "token.request_dir", "directory token requests are queued in"),
    _Flag("--token-issued", "token.issued_dir", "directory of the tokens crlbuilder issued"),
    _Flag("--token-max-per-party", "token.max_per_party", "tokens a party may hold at once"),
)


def _argument(field_type: Any) -> dict[str, Any]:
    """The argparse keywords of a flag setting a field of ``field_type``."""
    origin = get_origin(field_type)
    if origin is Annotated:
        return _argument(get_args(field_type)[0])
    if origin is Union or origin is UnionType:  # X | None: the flag sets an X
        return _argument(next(t for t in get_args(field_type) if t is not type(None)))
    if origin is Literal:
        return {"choices": get_args(field_type)}
    if origin is tuple:
        return {"action": "append"}
    if field_type is bool:
        return {"action": argparse.BooleanOptionalAction}
    return {"type": str if field_type is Path else field_type}


def _dest(flag: _Flag) -> str:
    return "cfg_" + flag.flag.removeprefix("--").replace("-", "_")


def _built_in(dotted: str) -> str:
    """The built-in default of the field ``dotted`` as ``--help`` shows it."""
    value: object = ResponderConfig()
    for part in dotted.split("."):
        value = getattr(value, part)
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, tuple):
        value = ", ".join(map(str, value))
    return str(value).replace("%", "%%") if value not in (None, "") else "unset"


def _range(dotted: str) -> str:
    """``; > 0, <= 86400``: the range the field ``dotted`` allows, as ``--help`` shows it."""
    limits = bounds(FIELD_TYPES[dotted])
    return f"; {limits}" if limits else ""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add one flag per configuration field (all default to "not given"); each help names
    the field and its built-in default (what applies when neither the file nor the
    environment sets it)."""
    group = parser.add_argument_group(
        "configuration (overrides the file and environment; the default shown is the built-in"
        " one, which a --config file may change)"
    )
    for flag in _FLAGS:
        how = _argument(FIELD_TYPES[flag.field])
        if "type" in how or how.get("action") == "append":  # --port PORT, not CFG_PORT
            how["metavar"] = flag.flag.removeprefix("--").upper().replace("-", "_")
        group.add_argument(
            flag.flag,
            dest=_dest(flag),
            help=f"{flag.help} [{flag.field}; default: {_built_in(flag.field)}{_range(flag.field)}]",
            **how,
        )


def overrides_from_args(ns: argparse.Namespace) -> dict[str, object]:
    """The dotted-field overrides of the flags given on the command line."""
    out: dict[str, object] = {}
    for flag in _FLAGS:
        value = getattr(ns, _dest(flag), None)
        if value is not None:
            out[flag.field] = value
    return out


def flag_fields() -> dict[str, str]:
    """Flag -> dotted field, for documentation and tests."""
    return {flag.flag: flag.field for flag in _FLAGS}
