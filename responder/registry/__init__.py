"""The registry of parties (届出をした署名検証者等): who may receive what, proven how, since when.

One TOML file, read by every worker and changed only through `responder
registry ...` (`responder.registry.cli`). Each ``[[party]]`` records what the
law makes the 機構 know about a recipient:

- the notification (届出, Act §17(1),(5), §36(1); Ord §30, §32, §61): name,
  address, representative, the office receiving the data, the provision start
  date, and for a group the range of its members (署名確認者の範囲);
- its titles: 署名検証者 with its Act §17(1) item (1..6, field ``category``), 団体署名検証者
  with its Act §17(5) kind (1, 2) and member range, 利用者証明検証者,
  特定利用者証明検証者 (approved under Act §38-2), or 署名確認者 (a member of a
  group, answered by its group only, Act §20(1));
- the agreement (取決め, Act §17(4),(6), §36(2); Ord §31, §33, §62): the
  services by name, families, methods, the CRL download cycle (周期), quotas,
  the liability text (損害賠償に関する事項), for a group how it answers its
  members;
- credentials: bearer tokens (stored as SHA-256 only), client certificates
  for mutual TLS, certificates for signed OCSP requests; each with an optional
  validity window, so a party can hold two overlapping ones while rotating;
- state: suspensions (提供の停止, Act §18(6),(7), §37(4)), with carry-over to
  the other title (Act §18(6)(6), §37(4)(6)), and the end of provision;
- a delegation (電子署名等確認業務の全部の委託, Ord §29, §60): the certified contractor
  (電子署名等確認業務受託者) a principal (電子署名等確認業務委託者) entrusts its whole
  verification work to (``delegated_to`` on its titles), and whether the contractor filed
  its notification (``filed_by``).

::

    version = 2

    [[party]]
    id = "both-verifier"                  # stable id, [a-z0-9-]
    name = "Demo Bank"                     # 氏名又は名称 (Ord §30(1))

    [party.notification]                   # 届出
    address = "..."                        # 住所 (Ord §30(1))
    representative = "..."                 # 代表者の氏名 (a corporation; always for a group)
    office = "..."                         # 提供を受ける事務所の所在地 (Ord §30(2))
    start = 2024-04-01                     # 提供を開始する日 (Ord §30(3)), a Japan date

    [[party.title]]
    kind = "signature-verifier"            # 署名検証者
    category = 6                           # Act §17(1) item
    certified_until = 2026-03-31           # items 5 and 6 only: the 認定 lapses (Act §17(2))

    [[party.title]]
    kind = "user-verifier"                 # 利用者証明検証者 (Act §36)
    category = 6
    certified_until = 2026-03-31

    [party.agreement]                      # 取決め
    services = ["sign-revocation-info", "sign-crl-file", "corresponding-serial",
                "auth-revocation-info"]
    families = ["sign-card", "sign-mobile", "auth-card", "auth-mobile"]
    methods = ["ocsp", "crl-file", "json"] # 提供の具体的な方法 (Ord §31(1))
    crl_cycle_seconds = 3600               # 周期 (Ord §31(2)): each CRL file at most once per period
    requests_per_second = 200              # quotas (absent: none)
    requests_per_day = 5000000
    provisions_per_day = 20000000          # 件数 per Japan day (Ord §71(4)): entries, not calls
    liability = "..."                      # 損害賠償に関する事項 (Ord §31(3))

    [[party.credential]]
    kind = "token"                         # or "mtls", "signed-request" (with cert = "path")
    label = "token-2025"
    token_sha256 = "<hex>"
    not_before = 2025-04-01T00:00:00+09:00
    not_after = 2026-04-01T00:00:00+09:00

    [[party.suspension]]                   # 提供の停止
    article = "Act §37(4)(1)"
    since = 2025-06-01T09:00:00+09:00
    reason = "..."
    carry_over = true                      # also stops the sign services (Act §18(6)(6))

    [[party]]                              # 電子署名等確認業務委託者 (Ord §29(1))
    id = "city-office"
    name = "..."

    [party.notification]
    address = "..."
    office = "..."
    start = 2025-04-01
    filed_by = "both-verifier"             # the contractor filed it (Ord §29(3), §60(1))

    [[party.title]]
    kind = "signature-verifier"
    category = 6                           # deemed certified under item 6 (Ord §29(1)):
    delegated_to = "both-verifier"         # no certified_until, the contractor's counts

    [[party.title]]
    kind = "user-verifier"
    category = 6
    delegated_to = "both-verifier"         # the same contractor: the whole work goes to one

    [[party.credential]]                   # no [party.agreement]: the contractor's is deemed
    kind = "token"                         # its own (Ord §29(4), §60(2)); requests are made
    token_sha256 = "<hex>"                 # with the principal's own credentials

Decisions recorded here (the tests hold them):

- Dates (start, certified_until, approved) are Japan calendar days (JST, UTC+9);
  times need an explicit offset.
- A group's member range (署名確認者の範囲, Ord §32(4)) is a list of party ids
  (``members``), an id prefix (``member_prefix``), or both; a member's entry
  must fall inside it until its provision has ended (then the group may narrow
  its range without it; its entry stays, with its history). Member entries carry no notification and no agreement
  (the group notifies their range; their agreement is with the group); a
  member's ``item``, when given, is its group's ``group_kind`` (Act §17(5)).
  Only a group's own appliance answers members (``[group] file``,
  `responder.policy.decide_member`); it refuses one with a suspension under
  ``"Act §20(2)(N)"`` (the answers) or ``"Act §20(6)(N)"`` (record information),
  N the §18(7) item the member's conduct falls under.
- Certificate credentials are valid inside both their own window and the
  certificate's validity. Credentials that expired while the file sat still
  are ignored with a warning when loading (workers never refuse a whole
  registry because time passed); the admin commands refuse to add an expired
  credential or to leave a changed party with expired credentials only.
- Every text (name, address, representative, office, liability, reasons...) shows what
  it holds: not blank, no control character (a name not even a tab or line feed) and no
  bidirectional mark or override (a refusal names the character, never the text).
- A suspension is kept once lifted (``until`` set by `registry resume`): it is the
  record of what was stopped and when. Once lifted it is history and no longer has to
  match the party's titles (a party may give up the title it stopped); one in force or
  still to come does.
- A credential belongs to one party: the same token, certificate or public
  key on two parties is refused.
- The old flat format (``titles = [...]``, ``tokens_sha256``, ``certs``,
  ``auth``) is parsed but refused when a registry is built (loaded by a worker,
  checked, changed): it carries no notification (届出) and no agreement (取決め),
  so it would receive every service its titles allow and could not be
  suspended, and no party is served without both (Act §17(1),(4), §36(1),(2)).
  The refusal names the command that migrates the file, `responder registry
  migrate` (`responder.registry.cli`), which asks the operator for what the old
  entries lack and invents nothing.

- Delegation (Ord §29, §60; `responder.registry.delegation` has the details). A principal's
  署名検証者 and 利用者証明検証者 titles are of category 6, name one contractor
  (``delegated_to``) and carry no ``certified_until``: it is deemed certified while the
  contractor is, a registered party holding a verifier title of category 6 with
  ``certified_until``, no group or member title, and delegating nothing itself (one
  level). ``filed_by`` names that contractor or nothing. For each delegated title whose
  kind the contractor holds, the contractor's agreement is the principal's (Ord §29(4),
  §60(2), deemed by law: what an agreement of its own names there is not served under it,
  and a warning says so); for any
  other it needs its own. Its quotas are the contractor's (the tighter of both with an
  agreement of its own), counted once for both (`Party.quota_id`). It starts no earlier
  and ends no later than its contractor. Its grants end with the contractor's
  certification or end of provision, and the contractor's suspensions stop the same side
  of it. All of this is computed when the file is checked, into the principal's `Party`:
  every service path reads only that, so each sees the agreement that counts.

Workers pick up a changed file within a second by calling
`Registry.reload_if_changed` (it compares the file's stat) or on SIGHUP; a file changed
in place (not renamed over) once it has settled (`responder.registry.lookup.SETTLE`).

Modules (callers import from the submodule; this package re-exports nothing):
`vocabulary` (titles, services, methods: the law's words), `schema` (the
file's tables, TOML parse and dump), `party` (a checked party), `delegation` (a principal's
deemed agreement, certification and suspensions), `checks` (the rules above), `lookup` (`Registry`, `LastGoodRegistry`: what workers use),
`audit` (the hash-chained audit log), `cli` (`responder registry ...`), `demo`
(the demo parties, imported only by the CLI).
"""
