"""What tests (and benchmarks) share; no test cases here.

- `tests.support.wait`: `until`, poll a condition until it holds or a deadline passes.
- `tests.support.procs`: a child process's lifecycle: start with stderr to a log, wait for
  its readiness line, stop it and its children by PID (also used by ``bench/``).
- `tests.support.harness`: the one harness for a real `responder serve`
  (`start_server`, `Server`) and the client side (`ocsp_request`, `status_of`,
  /metrics parsing).
- `tests.support.echo_app`: `EchoApp` and `ServerProcess`, the HTTP layer served by
  `responder.server.serve` with a trivial app (tests/test_http.py, tests/test_server.py,
  bench/bench_attack_http.py).
- `tests.support.pki`: small hand-made CAs and certificates (not the demo PKI), shared with
  ``bench/``.
- `tests.support.builder`: `builder_config`, an in-process builder's configuration.
- `tests.support.store`: `dump_store`, every key and value of a status store, for byte
  comparisons.
- `tests.support.shippedproxy`: deploy/haproxy/haproxy.cfg itself run on loopback in front of
  real responders.
- `tests.support.synth`: `synth_population`, a synthetic population's record files (the
  record stream's tests).
- `tests.support.idlefollow`: `ShiftedClock`, `records_builder`, `logged_events`: an
  in-process builder on a shifted clock, its follow loop idle (retention, facts expiry, the
  stream's ticks).
- `tests.support.grouppull`: a `crlbuilder group pull` process (`pulling`,
  `stop_with_sigterm`, `wait_asked`) and what a group directory holds after it
  (`crl_number`, `staged_left`).

``bench/`` imports from here rather than the reverse: benchmarks run from the repository root
(``python -m bench.…``) where ``tests`` is importable, and these helpers are test code, which
must not go into the installed ``crlbuilder``/``responder`` packages.

``echo_app.py`` runs as a script, with this folder first on ``sys.path``: no module here may
be named like a package it imports (hence ``harness``, not ``responder``).
"""
