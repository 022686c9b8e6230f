"""The JSON API under /v1: the provisions beyond OCSP, one route per service (issue 12).

Layout (one module per idea):

- `wire`     the Structs every route shares: `Problem` (RFC 9457), `CertRef`, `StoreRef`;
- `problem`  refusals as problem details, naming the rule, the article and the field;
- `route`    the route-module API: `Route` (a table entry), `Context`, `Reply`;
- `table`    the route table, ``ROUTES``: one entry per route;
- `routes`   the dispatcher (`V1Api`): authenticate, policy, quota, decode, handler,
             ledger, metrics note; `responder.app` sends every ``/v1/`` path here;
- `status`   POST /v1/status, batch 現況確認 (Act §18(1), §37(1));
- `changes`  POST /v1/watch and GET /v1/changes, the changes feed (現況確認 at scale), over
             `cursor` (the feed's opaque cursor), `watchset` (the watch lists' port and
             keyed hashing) and `watchdb` (the watch lists in LMDB).

Adding a route (R, W, T, V)
---------------------------

1. A module ``responder/v1/<name>.py`` with a docstring naming its provision and articles,
   its request and response Structs (``frozen=True, forbid_unknown_fields=True`` on
   requests, ``rename="camel"``, bounds with ``msgspec.Meta``), and a sans-I/O handler::

       def handle(request: MyRequest, ctx: Context) -> Reply[MyResponse] | Problem:
           ctx.party            # the authenticated registry.party.Party
           ctx.reader           # a StoreReader: one consistent view of the store
           ctx.now              # epoch seconds
           ctx.permit(service, family)   # None, or the policy.Refused for that family
           ctx.env              # what the route's setup(config) made, once per worker
           return Reply(MyResponse(...), counts=((Service.X, n),), family="sign-card")
           # or problem.bad_input("$.field", "what is wrong") -> 400, nothing counted

   ``counts`` are the provisions the ledger records (帳簿, Act §40), method ``json``,
   possibly of several services (``/v1/corresponding``). A side effect (a record to the
   builder's spool) is ``Reply(..., effect=callable)``: the shell runs it before sending
   and answers 503 ``unavailable``, counting nothing, if it raises.

2. One table entry::

       ROUTE: Final = Route(
           method="POST",            # or "GET": the request Struct is then the query
           path="/v1/name",          # parameters (flat str/int fields), strict
           name="name",              # endpoint label v1-name
           summary="...", description=__doc__ or "",
           request=MyRequest, response=MyResponse,
           services=(Service.X,),    # the dispatcher refuses 403 unless the agreement
           handler=handle,           # names one of them with the json method
           setup=None,               # or a function(ResponderConfig) -> env
           problems=(),              # further problem statuses it answers: ((410, "why"),)
           threaded=False,           # True: a large body is answered in the batch thread
                                     # (the handler, env and effect must be thread-safe)
           offload=None,             # or a function(request) -> bool: True answers that
                                     # call in the batch thread whatever its body's size
           writes=False,             # True: its calls change what later calls read; a
                                     # request pipelined after one answered off the loop
                                     # waits for its answer
       )

   and add ``<name>.ROUTE`` to ``responder.v1.table.ROUTES``. The dispatcher does the
   rest: authentication (401) before anything of the body is read, the policy per call
   (403: ended, not started, not agreed, suspended, method), the quota (429), the media
   type (415) and strict decoding (400 naming the field), the ledger, the metrics note
   and the access log, the JWS over the answer (``JWS-Signature``); the OpenAPI document
   is generated from the same entry.

In-process tests build a `Context` over `crlbuilder.store.memory.MemoryReader` and call
the handler (see ``tests/test_v1_status.py``), or drive `routes.V1Api` with a fake
request.
"""
