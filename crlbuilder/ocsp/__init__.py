"""OCSP bytes shared by both binaries (OCSPによる失効情報の提供, Act §18(1), §37(1)).

`request` parses an OCSPRequest (and the GET form), `response` encodes and signs
OCSPResponse DER. Both are sans-I/O. crlbuilder pre-signs stored answers with
`response`; the responder parses with `request` and signs fresh answers with
`response`. Depends on `crlbuilder.keys`, `crlbuilder.der` and the model only.
No re-exports: import from the submodule.
"""
