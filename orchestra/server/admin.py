"""Admin routes (a token always needed): models added, changed and removed while running.

    GET    /admin/models          every catalog model in full (endpoints and key names too)
    POST   /admin/models          add one: a `[[models]]` entry as JSON            -> 201
    PATCH  /admin/models/{name}   change some of its fields                         -> 200
    DELETE /admin/models/{name}   remove it                                         -> 200

A change is committed to the store before it is applied, so a restart keeps it (see
`model_sync`). Keys never travel: a model names the environment variable holding its key
(`api_key_env`), and only a `*_API_KEY` variable or one the configured models already use, so
an admin token cannot send another of the server's secrets (its own token) to an endpoint.
"""

from __future__ import annotations

import time
from typing import Any

from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from orchestra.core.errors import OrchestraError
from orchestra.core.model_spec import ModelSpec
from orchestra.server.body import read_json
from orchestra.server.errors import ApiError, api_error, bad_request
from orchestra.server.shapes import AUTO
from orchestra.server.state import ServerState, state_of


async def list_models(request: Request) -> Response:
    catalog = state_of(request).orc.catalog
    return JSONResponse({"object": "list", "data": [_full(m) for m in catalog]})


async def add_model(request: Request) -> Response:
    state = state_of(request)
    spec = _spec(state, await read_json(request, state.config.server.max_body_bytes))
    if spec.name in state.orc.catalog:
        raise ApiError(
            409, f"model {spec.name!r} is already in the catalog; PATCH it instead",
            code="model_exists", param="name",
        )  # fmt: skip
    await _save(state, spec)
    return JSONResponse(_full(state.orc.catalog.get(spec.name)), status_code=201)


async def update_model(request: Request) -> Response:
    state = state_of(request)
    current = _current(state, request.path_params["name"])
    changes = await read_json(request, state.config.server.max_body_bytes)
    if changes.get("name", current.name) != current.name:
        raise bad_request("a model cannot be renamed: add the new one, delete the old", "name")
    spec = _spec(state, {**current.model_dump(exclude_defaults=True), **changes})
    await _save(state, spec)
    return JSONResponse(_full(state.orc.catalog.get(spec.name)))


async def delete_model(request: Request) -> Response:
    state = state_of(request)
    current = _current(state, request.path_params["name"])
    try:
        await state.orc.store.drop_model(current.name, time.time())
        await state.sync.catch_up()
    except OrchestraError as exc:
        raise api_error(exc) from None
    return JSONResponse({"id": current.name, "object": "model", "deleted": True})


def _current(state: ServerState, name: str) -> ModelSpec:
    try:
        return state.orc.catalog.get(name)
    except OrchestraError as exc:
        raise api_error(exc) from None


def _spec(state: ServerState, data: dict[str, Any]) -> ModelSpec:
    if "api_key" in data:
        raise bad_request(
            "keys never travel: name the environment variable holding it with api_key_env",
            "api_key",
        )
    try:
        spec = ModelSpec.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or 'model'}: {e['msg']}" for e in exc.errors()
        )
        first = exc.errors()[0]["loc"]
        raise bad_request(f"invalid model: {problems}", str(first[0]) if first else None) from None
    if spec.name == AUTO:
        raise bad_request(f"{AUTO!r} is the name that lets the policy choose", "name")
    if spec.embedded:
        raise bad_request("the embedded model comes from the configuration only", "embedded")
    env = spec.api_key_env
    if env is not None and not (env.endswith("_API_KEY") or env in _configured_envs(state)):
        raise bad_request(
            f"api_key_env {env!r}: a key's variable must end in _API_KEY or be one the "
            "configured models use",
            "api_key_env",
        )
    return spec


def _configured_envs(state: ServerState) -> set[str]:
    return {m.api_key_env for m in state.config.models if m.api_key_env}


async def _save(state: ServerState, spec: ModelSpec) -> None:
    try:
        await state.orc.store.save_model(spec, time.time())
        await state.sync.catch_up()
    except OrchestraError as exc:
        raise api_error(exc) from None
    catalog = state.orc.catalog
    if spec.name not in catalog or catalog.get(spec.name) != spec:  # see the server's log
        raise ApiError(
            500, f"model {spec.name!r} was stored but could not be applied",
            type="server_error", code="model_not_applied",
        )  # fmt: skip


def _full(spec: ModelSpec) -> dict[str, Any]:
    return {"id": spec.name, "object": "model", **spec.model_dump(mode="json")}
