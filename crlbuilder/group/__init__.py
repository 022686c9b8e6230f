"""The group appliance (団体署名検証者, Act §17(5),(6), §20): what a group receives and how it is fed.

- `setup`: ``group.json``, what the group received from the 機構 (the issuers' CA
  certificates, Ord §74(1); the CRL URLs; its own credential) and its own responder key;
  read by both binaries.
- `init`: ``crlbuilder group init``, the group's directory from those alone.
- `pull`: ``crlbuilder group pull [--follow]``, the 機構's CRL files fetched at the agreed
  cycle (提供の周期, Ord §33(2)), verified and imported (`crlbuilder.crl.importer`).
"""
