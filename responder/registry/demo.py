"""The demo registry (not production code): a registry of the demo PKI's parties for `make demo` and tests.

Imported only by `responder.registry.cli` (`responder registry init --pki`) and tests
(import-linter contract in pyproject.toml).
"""

from __future__ import annotations

import hashlib
from datetime import date
from pathlib import Path
from typing import Final

from crlbuilder.manifest import Manifest
from crlbuilder.model import Family
from responder.registry.schema import (
    Agreement,
    AnyEntry,
    CredentialEntry,
    GroupSignatureVerifierTitle,
    MtlsCredential,
    Notification,
    PartyEntry,
    RegistryFile,
    SignatureConfirmerTitle,
    SignatureVerifierTitle,
    SignedRequestCredential,
    SpecifiedUserVerifierTitle,
    TitleEntry,
    TokenCredential,
    UserVerifierTitle,
    dump_registry,
)
from responder.registry.vocabulary import (
    SERVICE_FAMILIES,
    SERVICE_METHODS,
    Method,
    Service,
    Title,
    title_services,
)

# --- the demo registry ------------------------------------------------------------------------

DEMO_START: Final = date(2016, 1, 1)
"""The demo parties' provision start date (the My Number card's first year)."""


def registry_from_manifest(manifest: Manifest, out: Path) -> str:
    """A registry TOML for a demo PKI's parties, granting what their titles allow.

    Token hashes are read from the parties' token files; certificate paths are
    written relative to ``out``'s directory when possible.
    """
    members: dict[str, list[str]] = {}
    for p in manifest.parties:
        if p.group:
            members.setdefault(p.group, []).append(p.id)
    entries: list[AnyEntry] = []
    for p in manifest.parties:
        token = manifest.path(p.token).read_text(encoding="ascii").strip()
        cert = manifest.path(p.cert).resolve()
        try:
            cert_ref = str(cert.relative_to(out.parent.resolve()))
        except ValueError:
            cert_ref = str(cert)
        titles = [_demo_title(t, p.group, members.get(p.id, [])) for t in p.titles]
        kinds = frozenset(t.TITLE for t in titles)
        credentials: list[CredentialEntry] = [
            TokenCredential(
                label="token-1", token_sha256=hashlib.sha256(token.encode()).hexdigest()
            ),
            MtlsCredential(label="mtls-1", cert=cert_ref),
            SignedRequestCredential(label="signed-request-1", cert=cert_ref),
        ]
        if kinds == {Title.SIGNATURE_CONFIRMER}:
            entries.append(PartyEntry(id=p.id, name=p.name, title=titles, credential=credentials))
            continue
        services = sorted(title_services(kinds), key=list(Service).index)
        families: set[Family] = set()
        methods: set[Method] = set()
        for s in services:
            families |= SERVICE_FAMILIES[s]
            methods |= SERVICE_METHODS[s]
        group = Title.GROUP_SIGNATURE_VERIFIER in kinds
        entries.append(
            PartyEntry(
                id=p.id,
                name=p.name,
                title=titles,
                notification=Notification(
                    address="demo address (架空の住所)",
                    office="demo office (架空の事務所)",
                    representative="demo representative (架空の代表者)",
                    start=DEMO_START,
                ),
                agreement=Agreement(
                    services=services,
                    families=sorted(families, key=list(Family).index),
                    methods=sorted(methods, key=list(Method).index),
                    liability="demo: no liability (デモ用、損害賠償の定めなし)",
                    member_answer="demo: OCSP answers signed by the group's relay responder"
                    if group
                    else None,
                ),
                credential=credentials,
            )
        )
    return dump_registry(
        RegistryFile(parties=entries),
        header="Registry of parties: generated from the demo PKI by `responder registry init`.\n"
        "Change it with `responder registry add|update|suspend|resume|end`.",
    )


def _demo_title(name: str, group: str | None, members: list[str]) -> TitleEntry:
    title = Title(name)
    if title is Title.SIGNATURE_VERIFIER:
        return SignatureVerifierTitle(category=4)
    if title is Title.USER_VERIFIER:
        return UserVerifierTitle(category=4)
    if title is Title.GROUP_SIGNATURE_VERIFIER:
        return GroupSignatureVerifierTitle(group_kind=1, members=members)
    if title is Title.SIGNATURE_CONFIRMER:
        assert group is not None
        return SignatureConfirmerTitle(group=group)
    return SpecifiedUserVerifierTitle(approved=DEMO_START)
