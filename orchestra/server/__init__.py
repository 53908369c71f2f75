"""`orchestra serve`: Orchestra as an OpenAI-compatible HTTP service (Starlette on uvicorn).

    app.py      the app factory, its lifespan (one runtime per worker) and its route table
    state.py    what every route shares: the runtime, the settings, the metrics
    auth.py     the bearer token, checked in constant time
    body.py     reading a request body within its size limit
    shapes.py   OpenAI's request and response shapes, and Orchestra's `orchestra` object
    errors.py   OpenAI's error shape, and which status each Orchestra error becomes
    json_text.py  JSON for response bodies and events (orjson, the standard library behind)
    chat.py     POST /v1/chat/completions, as JSON or as server-sent events
    routes.py   models, health, status, feedback and history
    admin.py    models added, changed and removed while running, kept in the store
    metrics.py  GET /metrics, in Prometheus's text format

Only `orchestra serve` imports this package: the rest of Orchestra (and `orchestra --help`)
never pays for Starlette and uvicorn.
"""
