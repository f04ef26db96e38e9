"""Klaviyo's ``filter`` query syntax: parsing, checking against the schema, and evaluation.

Only what the served endpoints declare in ``x-klaviyo-filters`` is accepted. String comparison is
exact (no case folding, no trimming), because Klaviyo documents nothing more forgiving and a client
must not come to rely on it.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sandbox.openapi import RequestViolation

FieldGetter = Callable[[str], Any]

_TOKEN = re.compile(
    r"""\s*(?:
        (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')
      | (?P<punct>[(),\[\]])
      | (?P<word>[A-Za-z0-9_\-.:+\[\]'$]+?(?=[\s(),\]]|$))
    )""",
    re.VERBOSE,
)


@dataclass(frozen=True)
class Condition:
    operator: str
    field: str
    value: Any


@dataclass(frozen=True)
class Combination:
    operator: str  # "and", "or" or "not"
    parts: tuple[Condition | Combination, ...]


FilterNode = Condition | Combination


def _bad(detail: str) -> RequestViolation:
    return RequestViolation(detail, parameter="filter")


def _tokenize(text: str) -> list[tuple[str, str]]:
    tokens: list[tuple[str, str]] = []
    position = 0
    while position < len(text):
        if text[position:].strip() == "":
            break
        found = _TOKEN.match(text, position)
        if found is None or found.end() == position:
            raise _bad(f"Invalid filter provided near position {position}.")
        kind = found.lastgroup or ""
        tokens.append((kind, found.group(kind)))
        position = found.end()
    return tokens


class _Parser:
    def __init__(self, text: str) -> None:
        self.tokens = _tokenize(text)
        self.index = 0

    def _peek(self) -> tuple[str, str] | None:
        return self.tokens[self.index] if self.index < len(self.tokens) else None

    def _take(self, expected: str | None = None) -> tuple[str, str]:
        token = self._peek()
        if token is None or (expected is not None and token[1] != expected):
            raise _bad("Invalid filter provided: unexpected end or token.")
        self.index += 1
        return token

    def parse(self) -> FilterNode:
        parts = [self._call()]
        while self._peek() is not None:
            self._take(",")
            parts.append(self._call())
        if self._peek() is not None:
            raise _bad("Invalid filter provided: trailing characters.")
        return parts[0] if len(parts) == 1 else Combination("and", tuple(parts))

    def _call(self) -> FilterNode:
        kind, name = self._take()
        if kind != "word":
            raise _bad("Invalid filter provided: expected an operator.")
        self._take("(")
        if name in ("and", "or", "not"):
            parts = [self._call()]
            while self._peek() == ("punct", ","):
                self._take(",")
                parts.append(self._call())
            self._take(")")
            if name == "not" and len(parts) != 1:
                raise _bad("Invalid filter provided: not() takes one condition.")
            return Combination(name, tuple(parts))
        field_kind, field_name = self._take()
        if field_kind != "word":
            raise _bad("Invalid filter provided: expected a field name.")
        self._take(",")
        value = self._value()
        self._take(")")
        return Condition(name, field_name, value)

    def _value(self) -> Any:
        kind, text = self._take()
        if kind == "string":
            body = text[1:-1]
            return re.sub(r"\\(.)", r"\1", body)
        if text == "[":
            items: list[Any] = []
            if self._peek() == ("punct", "]"):
                self._take("]")
                return items
            items.append(self._value())
            while self._peek() == ("punct", ","):
                self._take(",")
                items.append(self._value())
            self._take("]")
            return items
        if kind != "word":
            raise _bad("Invalid filter provided: expected a value.")
        if text in ("true", "false"):
            return text == "true"
        if text == "null":
            return None
        try:
            return datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            pass
        try:
            return float(text) if "." in text else int(text)
        except ValueError:
            raise _bad(f"Invalid filter provided: cannot read value '{text}'.") from None


def parse_filter(text: str, allowed: dict[str, Any]) -> FilterNode:
    """Parse ``text`` and check every condition against the operation's ``x-klaviyo-filters``.

    :raises RequestViolation: on syntax errors and on fields or operators the endpoint does not support
    """
    node = _Parser(text).parse()
    _check(node, allowed)
    return node


def _check(node: FilterNode, allowed: dict[str, Any]) -> None:
    if isinstance(node, Combination):
        for part in node.parts:
            _check(part, allowed)
        return
    rule = allowed.get(node.field)
    if rule is None:
        raise _bad(f"'{node.field}' is not a valid field for filtering this resource.")
    operators = {op for group in rule.get("operators", {}).values() for op in group}
    if node.operator not in operators:
        raise _bad(f"'{node.operator}' is not a valid operator for the field '{node.field}'.")
    if node.operator == "any" and not isinstance(node.value, list):
        raise _bad(f"any() on '{node.field}' needs a list of values.")
    if node.operator != "any" and isinstance(node.value, list):
        raise _bad(f"{node.operator}() on '{node.field}' needs a single value.")
    enum = rule.get("value", {}).get("enum")
    values = node.value if isinstance(node.value, list) else [node.value]
    if enum is not None and any(value not in enum for value in values):
        raise _bad(f"Invalid value for the field '{node.field}'.")
    if rule.get("value", {}).get("format") == "date-time" and not all(
        isinstance(v, datetime) for v in values
    ):
        raise _bad(f"'{node.field}' must be compared with a date-time.")


def matches(node: FilterNode, get: FieldGetter) -> bool:
    """Evaluate a parsed filter for one record, reading fields through ``get``."""
    if isinstance(node, Combination):
        results = (matches(part, get) for part in node.parts)
        if node.operator == "and":
            return all(results)
        if node.operator == "or":
            return any(results)
        return not next(results)
    actual = get(node.field)
    if node.operator == "equals":
        return bool(actual == node.value)
    if node.operator == "any":
        return actual in node.value
    if actual is None:
        return False
    if node.operator == "greater-than":
        return bool(actual > node.value)
    if node.operator == "greater-or-equal":
        return bool(actual >= node.value)
    if node.operator == "less-than":
        return bool(actual < node.value)
    if node.operator == "less-or-equal":
        return bool(actual <= node.value)
    return False


def equality_values(node: FilterNode, field: str) -> list[Any] | None:
    """The exact values a filter pins ``field`` to, if it is a plain ``equals``/``any`` (for fast lookups)."""
    if isinstance(node, Condition) and node.field == field and node.operator in ("equals", "any"):
        return list(node.value) if isinstance(node.value, list) else [node.value]
    return None
