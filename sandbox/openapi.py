"""Request checking against the trimmed Klaviyo OpenAPI document.

The document is OpenAPI 3.0, whose ``nullable`` keyword plain JSON Schema does not know, so schemas are
rewritten once at load time into their JSON Schema equivalent before ``jsonschema`` sees them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import jsonschema
from jsonschema import Draft202012Validator

TRIMMED_SCHEMA_PATH = Path(__file__).with_name("klaviyo_openapi_trimmed.json")

#: Query parameters Klaviyo treats as comma-separated arrays (``style: form, explode: false``).
_ARRAY_SPLIT = ","

JSON_API = "application/vnd.api+json"
MAX_BODY_BYTES = 5 * 1024 * 1024


class RequestViolation(Exception):
    """A request that does not match the published contract.

    :param detail: human-readable reason, also written to the request log
    :param pointer: JSON pointer into the body, when the body is at fault
    :param parameter: name of the offending query parameter or header
    :param status: HTTP status to answer with
    :param code: JSON:API error code
    """

    def __init__(
        self,
        detail: str,
        *,
        pointer: str | None = None,
        parameter: str | None = None,
        status: int = 400,
        code: str = "invalid",
        title: str = "Invalid input.",
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.pointer = pointer
        self.parameter = parameter
        self.status = status
        self.code = code
        self.title = title


@dataclass(frozen=True)
class RateLimitSpec:
    """Per-endpoint limits as annotated in the schema (``x-klaviyo-ratelimit``)."""

    burst: int
    steady: int
    daily: int | None = None


@dataclass
class Operation:
    """One served (path template, method) pair and everything needed to check a request for it."""

    operation_id: str
    method: str
    template: str
    pattern: re.Pattern[str]
    path_params: tuple[str, ...]
    query_params: dict[str, dict[str, Any]]
    required_headers: tuple[str, ...]
    body_schema: dict[str, Any] | None
    body_required: bool
    scopes: tuple[str, ...]
    rate_limit: RateLimitSpec
    filters: dict[str, Any] = field(default_factory=dict)
    response_schemas: dict[str, dict[str, Any]] = field(default_factory=dict)

    def match(self, path: str) -> dict[str, str] | None:
        found = self.pattern.fullmatch(path)
        return None if found is None else found.groupdict()


def _parse_rate(text: str) -> int:
    return int(text.split("/", 1)[0])


def _to_json_schema(node: Any, *, strict_objects: bool) -> Any:
    """Rewrite OpenAPI 3.0 ``nullable`` into JSON Schema and optionally forbid unknown fields.

    Klaviyo rejects unknown attributes ("'x' is not a valid field for the resource 'profile'"), while
    the published schema leaves ``additionalProperties`` open. Request bodies are therefore checked
    with closed objects wherever the schema lists properties; free-form objects such as a profile's
    ``properties`` declare none and stay open.
    """
    if isinstance(node, list):
        return [_to_json_schema(item, strict_objects=strict_objects) for item in node]
    if not isinstance(node, dict):
        return node

    converted: dict[str, Any] = {}
    for key, value in node.items():
        if key == "properties" and isinstance(value, dict):
            converted[key] = {
                name: _to_json_schema(sub, strict_objects=strict_objects) for name, sub in value.items()
            }
        elif key in ("nullable", "format", "default", "discriminator", "readOnly", "writeOnly"):
            continue
        else:
            converted[key] = _to_json_schema(value, strict_objects=strict_objects)

    if strict_objects and "properties" in converted and "additionalProperties" not in converted:
        converted["additionalProperties"] = False

    if node.get("nullable") is True:
        if "$ref" in converted or "oneOf" in converted or "anyOf" in converted or "allOf" in converted:
            converted = {"anyOf": [converted, {"type": "null"}]}
        elif "type" in converted:
            converted["type"] = [converted["type"], "null"]
            if "enum" in converted:
                converted["enum"] = [*converted["enum"], None]
    return converted


def _inline_refs(node: Any, components: dict[str, Any], stack: tuple[str, ...] = ()) -> Any:
    """Replace local ``$ref`` s by their targets; reference lookups dominate validation time otherwise.

    A reference back into one of its own ancestors stays a reference, so recursive schemas still work.
    """
    if isinstance(node, list):
        return [_inline_refs(item, components, stack) for item in node]
    if not isinstance(node, dict):
        return node
    ref = node.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/components/") and ref not in stack:
        _, _, section, name = ref.split("/", 3)
        target = _inline_refs(components[section][name], components, (*stack, ref))
        siblings = {
            key: _inline_refs(value, components, stack) for key, value in node.items() if key != "$ref"
        }
        return {**target, **siblings} if siblings else target
    return {key: _inline_refs(value, components, stack) for key, value in node.items()}


#: Where an operation's body holds a large array of like items.
_BULK_ARRAYS: dict[str, tuple[str, ...]] = {
    "bulk_import_profiles": ("data", "attributes", "profiles", "data"),
    "bulk_subscribe_profiles": ("data", "attributes", "profiles", "data"),
    "bulk_unsubscribe_profiles": ("data", "attributes", "profiles", "data"),
}


def _lookup(document: Any, path: tuple[str, ...]) -> Any:
    for key in path:
        if not isinstance(document, dict):
            return None
        document = document.get(key)
    return document


def _replace(document: Any, path: tuple[str, ...], value: Any) -> Any:
    if not path:
        return value
    copy = dict(document)
    copy[path[0]] = _replace(document[path[0]], path[1:], value)
    return copy


def _shape(value: Any, key: str | None) -> Any:
    """The part of a bulk item that schema validation can see.

    The item schemas constrain types, required and allowed keys, and one enum (the ``type`` member);
    no string patterns, lengths or bounds. So two items with the same keys, the same JSON types and
    the same ``type`` values validate alike, and free-form objects such as custom ``properties``
    accept any content.
    """
    if isinstance(value, dict):
        if key == "properties":
            return {}
        return {name: _shape(sub, name) for name, sub in value.items()}
    if isinstance(value, list):
        shapes: dict[str, Any] = {}
        for item in value:
            shape = _shape(item, key)
            shapes.setdefault(json.dumps(shape, sort_keys=True), shape)
        return list(shapes.values())
    if isinstance(value, str):
        return value if key == "type" else ""
    if isinstance(value, bool) or value is None:
        return value
    return 0 if isinstance(value, int) else 0.5


def _raise_first_error(validator: Draft202012Validator, instance: Any, prefix: tuple[str | int, ...]) -> None:
    """Raise the most relevant schema error for ``instance`` as a :class:`RequestViolation`."""
    error = jsonschema.exceptions.best_match(validator.iter_errors(instance))
    if error is None:
        return
    pointer = "/" + "/".join(str(part) for part in (*prefix, *error.absolute_path))
    if error.validator == "additionalProperties" and isinstance(error.instance, dict):
        known = set(error.schema.get("properties", {}))
        extra = sorted(set(error.instance) - known)
        if extra:
            raise RequestViolation(
                f"'{extra[0]}' is not a valid field for this resource.",
                pointer=pointer.rstrip("/") + "/" + extra[0],
            )
    raise RequestViolation(f"Invalid input: {error.message}", pointer=pointer if pointer != "/" else "/data")


class KlaviyoContract:
    """The trimmed schema, compiled into operations and validators.

    :param path: where the trimmed JSON lives; the committed copy by default
    """

    def __init__(self, path: Path = TRIMMED_SCHEMA_PATH) -> None:
        self.document: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        self.operations: list[Operation] = [
            self._compile(template, method, spec)
            for template, methods in self.document["paths"].items()
            for method, spec in methods.items()
        ]
        self._validators: dict[tuple[str, bool], Draft202012Validator] = {}

    @cached_property
    def _strict_components(self) -> dict[str, Any]:
        return _to_json_schema(self.document["components"], strict_objects=True)

    @cached_property
    def _loose_components(self) -> dict[str, Any]:
        return _to_json_schema(self.document["components"], strict_objects=False)

    def _compile(self, template: str, method: str, spec: dict[str, Any]) -> Operation:
        names = tuple(re.findall(r"{(\w+)}", template))
        regex = re.escape(template)
        for name in names:
            regex = regex.replace(re.escape("{" + name + "}"), f"(?P<{name}>[^/]+)")

        query: dict[str, dict[str, Any]] = {}
        headers: list[str] = []
        for parameter in spec.get("parameters", []):
            if parameter["in"] == "query":
                query[parameter["name"]] = parameter
            elif parameter["in"] == "header" and parameter.get("required"):
                headers.append(parameter["name"])

        body_schema = None
        body_required = False
        if "requestBody" in spec:
            body_required = bool(spec["requestBody"].get("required"))
            body_schema = spec["requestBody"]["content"]["application/vnd.api+json"]["schema"]

        responses = {}
        for status, response in spec.get("responses", {}).items():
            content = response.get("content", {}).get("application/vnd.api+json")
            if content:
                responses[status] = content["schema"]

        limits = spec["x-klaviyo-ratelimit"]
        return Operation(
            operation_id=spec["operationId"],
            method=method.upper(),
            template=template,
            pattern=re.compile(regex),
            path_params=names,
            query_params=query,
            required_headers=tuple(headers),
            body_schema=body_schema,
            body_required=body_required,
            scopes=tuple(spec.get("x-klaviyo-scopes", ())),
            rate_limit=RateLimitSpec(
                burst=_parse_rate(limits["burst"]),
                steady=_parse_rate(limits["steady"]),
                daily=_parse_rate(limits["daily"]) if "daily" in limits else None,
            ),
            filters=spec.get("x-klaviyo-filters", {}),
            response_schemas=responses,
        )

    def resolve(self, method: str, path: str) -> tuple[Operation | None, dict[str, str], list[str]]:
        """Find the operation for a request.

        :return: the operation (or ``None``), its path parameters, and the methods the path allows
        """
        allowed: list[str] = []
        for operation in self.operations:
            params = operation.match(path)
            if params is None:
                continue
            if operation.method == method.upper():
                return operation, params, allowed
            allowed.append(operation.method)
        return None, {}, allowed

    def operation_for(self, method: str, path: str) -> tuple[Operation, dict[str, str]]:
        """The operation a request addresses and its path parameters.

        :raises RequestViolation: 404 for an unknown path, 405 for a known path and another method
        """
        operation, params, allowed = self.resolve(method, path)
        if operation is not None:
            return operation, params
        if allowed:
            raise RequestViolation(
                f"Method {method} is not allowed on {path}.",
                status=405,
                code="method_not_allowed",
                title="Method not allowed.",
            )
        raise RequestViolation(
            f"{path} is not an endpoint of this API.", status=404, code="not_found", title="Not found."
        )

    def check_headers(self, operation: Operation, headers: Mapping[str, str]) -> None:
        """Check the operation's required headers against their schema (``revision`` is one).

        :param headers: a case-insensitive mapping of the request headers
        :raises RequestViolation: for a missing header or a value its schema does not allow
        """
        for name in operation.required_headers:
            value = headers.get(name)
            if value is None:
                raise RequestViolation(f"The '{name}' header is required.", parameter=name)
            if name == "revision" and value != self.revision:
                raise RequestViolation(
                    f"Unsupported revision '{value}'; this contract is revision {self.revision} only.",
                    parameter=name,
                )

    @property
    def revision(self) -> str:
        """The API revision the schema describes (its ``info.version``)."""
        return str(self.document["info"]["version"])

    def parse_body(self, operation: Operation, content_type: str | None, raw_body: bytes) -> Any:
        """Check the media type, size and schema of a request body and return it parsed.

        :return: the parsed JSON, or ``None`` when the operation takes no body and none was sent
        :raises RequestViolation: 415, 413 or 400, as Klaviyo answers them
        """
        if operation.body_schema is None:
            if raw_body:
                raise RequestViolation(f"{operation.method} {operation.template} takes no request body.")
            return None
        if not raw_body and not operation.body_required:
            return None
        media_type = (content_type or "").split(";", 1)[0].strip().lower()
        if media_type != JSON_API:
            raise RequestViolation(
                f"Unsupported media type '{media_type or '(none)'}'; use {JSON_API}.",
                status=415,
                code="unsupported_media_type",
                title="Unsupported media type.",
            )
        if len(raw_body) > MAX_BODY_BYTES:
            raise RequestViolation(
                "The request body is larger than 5 MB.",
                status=413,
                code="payload_too_large",
                title="Payload too large.",
            )
        try:
            body = json.loads(raw_body)
        except (ValueError, UnicodeDecodeError):
            raise RequestViolation("The request body is not valid JSON.", pointer="/") from None
        self.check_body(operation, body)
        return body

    def check_request(
        self,
        method: str,
        path: str,
        query: Iterable[tuple[str, str]],
        headers: Mapping[str, str],
        raw_body: bytes,
    ) -> Operation:
        """Check one whole request against the contract: the sandbox's gate, and the unit tests' mocks.

        Authentication is checked for form only (the ``Klaviyo-API-Key`` scheme with a key); whether
        the key is known and has the scopes is the server's business, not the schema's.

        :param path: the URL path, without host or query
        :param query: the decoded query pairs, in order
        :param headers: a case-insensitive mapping of the request headers
        :raises RequestViolation: for the first thing Klaviyo would refuse
        """
        scheme, _, key = (headers.get("Authorization") or "").partition(" ")
        if scheme != "Klaviyo-API-Key" or not key.strip():
            raise RequestViolation(
                "Missing or invalid authorization scheme. Please use Klaviyo-API-Key.",
                status=401,
                code="not_authenticated",
                title="Authentication credentials were not provided.",
            )
        operation, _params = self.operation_for(method, path)
        self.check_headers(operation, headers)
        self.parse_query(operation, list(query))
        self.parse_body(operation, headers.get("Content-Type"), raw_body)
        return operation

    def _validator(self, schema: dict[str, Any], *, strict: bool) -> Draft202012Validator:
        key = (json.dumps(schema, sort_keys=True), strict)
        validator = self._validators.get(key)
        if validator is None:
            components = self._strict_components if strict else self._loose_components
            root = {
                **_inline_refs(_to_json_schema(schema, strict_objects=strict), components),
                "components": components,
            }
            validator = Draft202012Validator(root)
            self._validators[key] = validator
        return validator

    def parse_query(self, operation: Operation, raw: list[tuple[str, str]]) -> dict[str, Any]:
        """Check the query string and return its values, arrays split and integers parsed.

        :raises RequestViolation: for unknown, repeated or invalid parameters
        """
        values: dict[str, Any] = {}
        for name, text in raw:
            parameter = operation.query_params.get(name)
            if parameter is None:
                raise RequestViolation(f"'{name}' is not a valid query parameter.", parameter=name)
            if name in values:
                raise RequestViolation(f"Query parameter '{name}' was given more than once.", parameter=name)
            schema = parameter.get("schema", {})
            value: Any = text
            if schema.get("type") == "array":
                value = [item for item in text.split(_ARRAY_SPLIT)]
            elif schema.get("type") == "integer":
                try:
                    value = int(text)
                except ValueError:
                    raise RequestViolation(
                        f"'{text}' is not a valid integer for '{name}'.", parameter=name
                    ) from None
            errors = sorted(self._validator(schema, strict=False).iter_errors(value), key=str)
            if errors:
                raise RequestViolation(f"Invalid value for '{name}': {errors[0].message}", parameter=name)
            values[name] = value
        return values

    def check_body(self, operation: Operation, body: Any) -> None:
        """Validate a parsed JSON body against the operation's request schema.

        Large arrays of like items (10,000 profiles in one bulk job) are checked once per distinct
        item shape rather than item by item; see :func:`_shape` for why that is exact here.

        :raises RequestViolation: with a JSON pointer to the first offending place
        """
        if operation.body_schema is None:
            return
        validator = self._validator(operation.body_schema, strict=True)
        array_path = _BULK_ARRAYS.get(operation.operation_id)
        items = _lookup(body, array_path) if array_path else None
        if array_path is None or not isinstance(items, list):
            _raise_first_error(validator, body, ())
            return

        _raise_first_error(validator, _replace(body, array_path, []), ())
        item_schema = validator.schema
        for key in array_path:
            item_schema = item_schema["properties"][key]
        item_validator = Draft202012Validator(
            {**item_schema["items"], "components": validator.schema["components"]}
        )
        checked: set[str] = set()
        for index, item in enumerate(items):
            signature = json.dumps(_shape(item, None), sort_keys=True)
            if signature in checked:
                continue
            _raise_first_error(item_validator, item, (*array_path, index))
            checked.add(signature)

    def response_errors(self, operation: Operation, status: int, body: Any) -> list[str]:
        """Messages for every way a response body breaks the declared response schema."""
        schema = operation.response_schemas.get(str(status))
        if schema is None:
            return []
        validator = self._validator(schema, strict=False)
        return [
            f"{'/'.join(str(p) for p in err.absolute_path)}: {err.message}"
            for err in validator.iter_errors(body)
        ]
