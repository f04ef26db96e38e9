"""Injectable faults, shared by the Klaviyo and Nosto servers.

A rule either acts on matching HTTP requests (a status, an HTML page, a truncated body, a delay, a
reset connection, a 400 that quotes an email) or on Klaviyo's bulk import jobs (failing emails,
cancelled, held or never-finishing jobs). Each acts ``times`` times, or forever when ``times`` is null.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import asdict, dataclass, field
from typing import Any

REQUEST_KINDS = frozenset({"status", "html", "truncated_json", "delay", "reset", "reject_400_email"})
JOB_KINDS = frozenset({"job_fail_emails", "job_cancel", "hold_jobs", "job_never_finishes"})


class FaultRuleError(ValueError):
    """A fault rule the admin API cannot accept."""


@dataclass
class FaultRule:
    """One fault. See ``sandbox/README.md`` for the JSON form and the meaning of each field."""

    id: int
    kind: str
    method: str | None = None
    path: str | None = None
    times: int | None = None
    status: int | None = None
    body: Any = None
    retry_after: int | None = None
    seconds: float = 0.0
    emails: list[str] = field(default_factory=list)
    reason: str = "Profile could not be imported."
    body_contains: str | None = None
    fired: int = 0

    def matches(self, method: str, path: str, body: bytes = b"") -> bool:
        if self.method is not None and self.method.upper() != method.upper():
            return False
        if self.body_contains is not None and self.body_contains.encode() not in body:
            return False
        return self.path is None or re.search(self.path, path) is not None

    @property
    def exhausted(self) -> bool:
        return self.times is not None and self.fired >= self.times

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


class FaultBook:
    """The active fault rules of one server."""

    _FIELDS = frozenset(FaultRule.__dataclass_fields__) - {"id", "fired"}

    def __init__(self) -> None:
        self.rules: list[FaultRule] = []
        self._ids = itertools.count(1)

    def add(self, spec: dict[str, Any]) -> FaultRule:
        """Validate one rule's JSON and activate it.

        :raises FaultRuleError: for unknown kinds or fields, or a bad path regex
        """
        if not isinstance(spec, dict):
            raise FaultRuleError("a fault rule is a JSON object")
        unknown = set(spec) - self._FIELDS
        if unknown:
            raise FaultRuleError(f"unknown fault rule fields: {sorted(unknown)}")
        kind = spec.get("kind")
        if kind not in REQUEST_KINDS | JOB_KINDS:
            raise FaultRuleError(f"unknown fault kind {kind!r}; known: {sorted(REQUEST_KINDS | JOB_KINDS)}")
        if spec.get("path") is not None:
            try:
                re.compile(spec["path"])
            except re.error as exc:
                raise FaultRuleError(f"bad path regex: {exc}") from None
        if kind == "status" and not isinstance(spec.get("status"), int):
            raise FaultRuleError("a 'status' fault needs an integer 'status'")
        rule = FaultRule(id=next(self._ids), **spec)
        self.rules.append(rule)
        return rule

    def clear(self) -> None:
        self.rules.clear()

    def take_request_fault(self, method: str, path: str, body: bytes = b"") -> FaultRule | None:
        """The first live request rule matching the request, counted as fired."""
        for rule in self.rules:
            if rule.kind in REQUEST_KINDS and not rule.exhausted and rule.matches(method, path, body):
                rule.fired += 1
                return rule
        return None

    def take_job_faults(self) -> list[FaultRule]:
        """Live job rules for one new bulk import job, each counted as fired."""
        taken = []
        for rule in self.rules:
            if rule.kind in JOB_KINDS and not rule.exhausted:
                rule.fired += 1
                taken.append(rule)
        return taken

    def as_json(self) -> list[dict[str, Any]]:
        return [rule.as_json() for rule in self.rules]
