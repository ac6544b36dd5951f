"""
The edge: HTTP, SSE and WebSocket in front of the runtime (Quart-Trio on Hypercorn).

How the modules fit: ``_server`` serves ``_app.asgi_app``, which hands
WebSockets to ``_sockets`` (each one a ``_session.Session`` actor) and HTTP to
the Quart app ``_app.create_app`` assembles from one blueprint per API family
(``_core``, ``_messages``, ``_templates``, ``_prompts``, ``_contexts``,
``_budget``, ``_evaluate``, and ``_compat_v1`` with its OpenAI and Anthropic halves,
``_compat_openai`` and ``_compat_anthropic``, over their shared ``_compat``).
Below them sit what they share: ``_checks`` (what every request passes),
``_fields`` (what no value in untrusted JSON may be), ``_schema`` (typed
schemas and their one error translation) with the schemas themselves
(``_schemas_native``, ``_schemas_admin``, ``_schemas_openai``,
``_schemas_anthropic``, ``_schemas_ws``), ``_json`` (writing every reply's JSON), ``_http`` (bodies, JSON
replies, errors) and ``_sse`` (every stream). ``_openapi`` publishes the schemas as
``/openapi.json`` and ``/docs``. ``_hermes`` registers with Hermes. ``_hypercorn``
holds Rhetor's adjustments to Hypercorn, which importing ``_server`` applies.
"""
