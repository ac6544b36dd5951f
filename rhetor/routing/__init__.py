"""
The Router actor: plans, dispatches and accounts for every LLM request.

How the modules fit: ``_router`` is the actor and its messages; it prepares
a request (``_conversations`` for the context's window and the turns it
stores, ``_planning`` for the plan, over ``_plan``'s pure task routing and
``_catalogue``'s view of the providers) and hands it to ``_attempts``, the
one attempt loop for whole replies and streams, which reserves and settles
through ``_billing``. ``_evaluate`` builds and reads evaluations. The
request and reply types live in :mod:`rhetor._types` and are exported by
``rhetor``.
"""
