"""Demo and test material, not production code: the demo PKI, the synthetic population, `make demo`.

`pki` creates issuing CAs, OCSP signers and party credentials; `certprofile`
issues JPKI-profile end-entity certificates carrying the four facts; `synth`
generates a synthetic population of records, sample certificates and expected
answers; `__main__` is the `make demo` driver (`python -m crlbuilder.demo`).
Nothing in production imports this package: only the `crlbuilder` CLI does, for
its `pki init` and `synth` commands (import-linter contract in pyproject.toml).
No re-exports: import from the submodule.
"""
