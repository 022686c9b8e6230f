"""Signature validation (電子署名の検証, Act §19(1), §21(1)): one JPKI signature checked in one call.

A 署名検証者 that receives a signed document and a sign certificate must confirm that
the certificate has not lost effect and that the signature was made with its key (Act
§19(1)); a 署名確認者 must do the same through its group (§21(1)). This package does
both for one item, sans-I/O (no socket, no file, no clock: the caller passes the store
view and the instant), and returns a result with one field per check:

- `request`: the three input formats as msgspec Structs (raw PKCS#1 v1.5, CMS
  SignedData, XMLDSig);
- `signature`: what every format's check yields (`Signed`), the hash algorithms and the
  raw PKCS#1 v1.5 check;
- `cms`: CMS / PKCS#7 SignedData, attached or detached (a DER walk of the fields read;
  BER re-encoded by asn1crypto first), signed attributes;
- `xmldsig`: XML signatures, enveloped or detached (signxml; no external URI is ever
  fetched);
- `path`: the certificate chains to an issuer generation of the store's issuer table;
  family (sign or auth) and key usage;
- `status`: the certificate's status in the store at the signing instant and now, with
  the revocation's time, reason and legal category (失効事由) and its article;
- `facts`: the four facts (基本4情報) of a sign certificate, decoded;
- `result`: the documented result codes and the per-item answer Structs;
- `verdict`: one item through every check, and the overall result code.

Nothing here keeps the document, the signature or the certificate (Act §52: the
received revocation information serves only the confirmation; docs/validation.md).
"""
