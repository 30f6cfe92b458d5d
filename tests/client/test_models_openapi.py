"""The client's models against the real server's /openapi.json: every field of each model
is a property of its schema, with a compatible type, and a field the model requires is
required and never null there. A server that renames, drops or retypes a field fails here.
(Properties the model does not read are allowed: an older client ignores them.)"""

from __future__ import annotations

import dataclasses
import enum
import types
import typing
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import httpx
import pytest
from notify_relay_client import (
    Attempt,
    CallbackState,
    Destination,
    FieldError,
    Message,
    PartnerResponse,
    ReplayResult,
    SubmitResult,
)

from tests.e2e.api_client import ServerProcess

pytestmark = pytest.mark.e2e
SCHEMAS: dict[type, str] = {
    SubmitResult: "SubmitResponse", Message: "MessageOut", Attempt: "AttemptOut",
    PartnerResponse: "PartnerResponseOut", CallbackState: "CallbackOut",
    Destination: "DestinationOut", ReplayResult: "ReplayOut", FieldError: "FieldErrorOut",
}


def camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


@pytest.fixture(scope="module")
def components(server: ServerProcess) -> dict[str, Any]:
    document = httpx.get(server.base_url + "/openapi.json", timeout=10).json()
    schemas: dict[str, Any] = document["components"]["schemas"]
    return schemas


def accepts(schemas: dict[str, Any], schema: dict[str, Any], tp: Any) -> bool:
    """Whether every value `schema` allows reads as `tp` (null aside: see nullable)."""
    if "$ref" in schema:
        return accepts(schemas, schemas[schema["$ref"].rsplit("/", 1)[1]], tp)
    if "anyOf" in schema:
        return all(accepts(schemas, s, tp) for s in schema["anyOf"] if s.get("type") != "null")
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        return any(accepts(schemas, schema, a) for a in args if a is not type(None))
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return set(schema.get("enum", ())) <= {m.value for m in tp}
    if dataclasses.is_dataclass(tp):
        return schema.get("title") == SCHEMAS.get(tp)  # type: ignore[arg-type]
    kind = schema.get("type")
    if origin is tuple:
        return kind == "array" and accepts(schemas, schema["items"], args[0])
    if origin is Mapping:
        return kind == "object" and accepts(schemas, schema["additionalProperties"], args[1])
    return {str: kind == "string", datetime: kind == "string", int: kind == "integer",
            float: kind in ("number", "integer"), bool: kind == "boolean"}.get(tp, False)


def nullable(schema: dict[str, Any]) -> bool:
    return any(s.get("type") == "null" for s in schema.get("anyOf", ()))


@pytest.mark.parametrize("model", list(SCHEMAS), ids=lambda m: m.__name__)
def test_model_matches_schema(model: type, components: dict[str, Any]) -> None:
    schema = components[SCHEMAS[model]]
    hints = typing.get_type_hints(model)
    for field in dataclasses.fields(model):
        name = camel(field.name)
        assert name in schema["properties"], f"{model.__name__}.{field.name}: no {name}"
        prop = schema["properties"][name]
        assert accepts(components, prop, hints[field.name]), (
            f"{model.__name__}.{field.name}: {hints[field.name]} vs {prop}")
        optional = (type(None) in typing.get_args(hints[field.name])
                    or field.default is not dataclasses.MISSING
                    or field.default_factory is not dataclasses.MISSING)
        if not optional:
            assert name in schema.get("required", ()), f"{name} is not required"
            assert not nullable(prop), f"{name} may be null"


def test_the_check_sees_drift(components: dict[str, Any]) -> None:
    renamed = {**components["ReplayOut"], "properties": {"replayedCount": {"type": "integer"},
                                                         "more": {"type": "boolean"}}}
    assert "replayed" not in renamed["properties"]
    assert not accepts(components, {"type": "string"}, int)
    assert not accepts(components, {"anyOf": [{"type": "string"}, {"type": "null"}]}, int)
    assert not accepts(components, {"$ref": "#/components/schemas/Status"}, bool)
