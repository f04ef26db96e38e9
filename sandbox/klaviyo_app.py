"""The sandbox Klaviyo server: a FastAPI app answering ``/api/...`` like a live account would.

Every API request passes the same gate, in this order: auth (401), a known path and method (404/405),
key scopes (403), the ``revision`` header, query parameters, media type (415) and body, all checked
against the trimmed official schema (400, recorded as a schema violation), then the per-endpoint
rate limits (429). Only then does the operation's handler run.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import bisect
import hashlib
import json
import re
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import partial
from typing import Any, TypeVar
from urllib.parse import urlencode

from fastapi import Body, FastAPI, Request
from fastapi.responses import JSONResponse, Response

from sandbox import DEFAULT_KLAVIYO_KEY
from sandbox.common import RawSendCapture, RequestLog, require_loopback, reset_connection
from sandbox.faults import FaultBook, FaultRule, FaultRuleError
from sandbox.filters import FilterNode, equality_values, matches, parse_filter
from sandbox.klaviyo_state import (
    PROFILE_FIELDS,
    SEGMENT_PROCESSING_SECONDS,
    BulkJob,
    DuplicateProfile,
    Flow,
    KlaviyoAccount,
    KlaviyoList,
    KlaviyoSegment,
    Profile,
    is_valid_email,
    iso,
    new_short_id,
    now_utc,
)
from sandbox.openapi import JSON_API, KlaviyoContract, Operation, RateLimitSpec, RequestViolation
from sandbox.ratelimit import RateLimiter

MAX_PROFILE_BYTES = 100 * 1024
MAX_BULK_PROFILES = 10_000
MAX_LIST_MEMBER_IDS = 1_000
#: Klaviyo's documented cap on conditions in one segment (help article 115005062847).
MAX_SEGMENT_CONDITIONS = 100
#: Profile fields a profile-property condition may name directly; custom ones are ``properties['name']``.
BUILT_IN_PROFILE_PROPERTIES = frozenset(
    {"email", "phone_number", "external_id", "first_name", "last_name", "organization", "title", "locale"}
)
CUSTOM_PROPERTY = re.compile(r"properties\['[^'\]]+'\]")
#: ``additional-fields[list]=profile_count`` (and ``[segment]``) is counted in a separate, much smaller bucket.
PROFILE_COUNT_LIMIT = RateLimitSpec(burst=1, steady=15)

T = TypeVar("T")
_Record = TypeVar("_Record", KlaviyoList, KlaviyoSegment)


class ApiError(Exception):
    """A JSON:API error answer that is Klaviyo's business decision, not a contract violation."""

    def __init__(
        self,
        status: int,
        code: str,
        title: str,
        detail: str,
        *,
        pointer: str | None = None,
        parameter: str | None = None,
        meta: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.title = title
        self.detail = detail
        self.pointer = pointer
        self.parameter = parameter
        self.meta = meta


def error_document(
    status: int,
    code: str,
    title: str,
    detail: str,
    *,
    pointer: str | None = None,
    parameter: str | None = None,
    meta: dict[str, Any] | None = None,
) -> dict[str, Any]:
    error: dict[str, Any] = {
        "id": str(uuid.uuid4()),
        "status": status,
        "code": code,
        "title": title,
        "detail": detail,
    }
    if pointer is not None:
        error["source"] = {"pointer": pointer}
    elif parameter is not None:
        error["source"] = {"parameter": parameter}
    if meta:
        error["meta"] = meta
    return {"errors": [error]}


def api_json(status: int, document: Any, headers: dict[str, str] | None = None) -> Response:
    return Response(
        content=json.dumps(document, separators=(",", ":")),
        status_code=status,
        media_type=JSON_API,
        headers=headers,
    )


def not_found(what: str, ident: str) -> ApiError:
    return ApiError(404, "not_found", "Not found.", f"A {what} with id {ident} does not exist.")


@dataclass
class Call:
    """One checked request, handed to an operation handler."""

    request: Request
    operation: Operation
    path: dict[str, str]
    query: dict[str, Any]
    body: Any
    base: str

    def url(self, path: str) -> str:
        return f"{self.base}{path}"


@dataclass
class KlaviyoConfig:
    """Settings the admin API can change at run time."""

    api_keys: dict[str, list[str] | None] = field(default_factory=lambda: {DEFAULT_KLAVIYO_KEY: None})
    job_delay_base: float = 0.2
    job_delay_per_1000: float = 0.05
    flows: dict[str, list[Flow]] = field(default_factory=dict)
    validate_responses: bool = False

    def as_json(self, limiter: RateLimiter) -> dict[str, Any]:
        return {
            "api_keys": self.api_keys,
            "job_delay_base": self.job_delay_base,
            "job_delay_per_1000": self.job_delay_per_1000,
            "flows": {key: [flow.__dict__ for flow in flows] for key, flows in self.flows.items()},
            "validate_responses": self.validate_responses,
            "rate_scale": limiter.scale,
            "rate_limits_enabled": limiter.enabled,
        }


# -- pagination -----------------------------------------------------------------------------------------


def _encode_cursor(payload: dict[str, Any]) -> str:
    raw = json.dumps(payload, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(text: str) -> dict[str, Any]:
    try:
        padded = text + "=" * (-len(text) % 4)
        payload = json.loads(base64.urlsafe_b64decode(padded.encode()))
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise RequestViolation("Invalid cursor provided.", parameter="page[cursor]") from None
    if not isinstance(payload, dict) or payload.get("d") not in ("a", "b") or "k" not in payload:
        raise RequestViolation("Invalid cursor provided.", parameter="page[cursor]")
    return payload


def paginate(
    call: Call,
    items: list[T],
    key: Callable[[T], list[Any]],
    *,
    descending: bool = False,
    default_size: int = 20,
) -> tuple[list[T], dict[str, Any]]:
    """Keyset pagination over ``items`` (already in ascending ``key`` order).

    Cursors carry the boundary key, so members added or removed while a client pages through
    neither shift nor repeat the rest. A cursor is bound to its endpoint, filter and sort: replaying
    it with a different query is refused, like Klaviyo's "Invalid cursor provided.".
    """
    size = int(call.query.get("page[size]", default_size))
    fingerprint = hashlib.sha256(
        json.dumps(
            [call.operation.template, call.path, call.query.get("filter"), call.query.get("sort")]
        ).encode()
    ).hexdigest()[:16]
    # Keys are computed only where bisect looks: a 50,000-member list is paged 500 times.
    start, stop = 0, min(size, len(items))
    cursor_text = call.query.get("page[cursor]")
    if cursor_text:
        cursor = _decode_cursor(cursor_text)
        if cursor.get("f") != fingerprint:
            raise RequestViolation("Invalid cursor provided.", parameter="page[cursor]")
        boundary = cursor["k"]
        forward = cursor["d"] == "a"
        if forward != descending:
            start = bisect.bisect_right(items, boundary, key=key)
            stop = min(start + size, len(items))
        else:
            stop = bisect.bisect_left(items, boundary, key=key)
            start = max(0, stop - size)
        if descending:
            start, stop = len(items) - stop, len(items) - start
    count = len(items)
    page = items[count - stop : count - start][::-1] if descending else items[start:stop]

    def link(direction: str, boundary: list[Any]) -> str:
        params = [(k, v) for k, v in call.request.query_params.multi_items() if k != "page[cursor]"]
        params.append(("page[cursor]", _encode_cursor({"d": direction, "k": boundary, "f": fingerprint})))
        return f"{call.base}{call.request.url.path}?{urlencode(params)}"

    # The schema types next/prev as strings, so a missing page is an absent key, never a null.
    links: dict[str, Any] = {"self": str(call.request.url)}
    if stop < count and page:
        links["next"] = link("a", key(page[-1]))
    if start > 0 and page:
        links["prev"] = link("b", key(page[0]))
    return page, links


class KlaviyoSandbox:
    """State, checks and handlers of the sandbox Klaviyo account, plus its FastAPI app.

    :param api_key: the key that has every scope
    :param rate_scale: multiplies every rate-limit window (``SANDBOX_RATE_SCALE``)
    """

    def __init__(self, api_key: str = DEFAULT_KLAVIYO_KEY, rate_scale: float = 1.0) -> None:
        self.contract = KlaviyoContract()
        self.account = KlaviyoAccount()
        self.faults = FaultBook()
        self.log = RequestLog()
        self._initial = (api_key, rate_scale)
        self.limiter = RateLimiter(scale=rate_scale)
        self._filtered: tuple[Any, list[Profile]] = (None, [])
        self.config = KlaviyoConfig(api_keys={api_key: None})
        self.handlers: dict[str, Callable[[Call], Response]] = {
            "get_accounts": self.get_accounts,
            "get_lists": self.get_lists,
            "create_list": self.create_list,
            "get_list": self.get_list,
            "update_list": self.update_list,
            "delete_list": self.delete_list,
            "get_profiles_for_list": self.get_profiles_for_list,
            "get_profile_ids_for_list": self.get_profile_ids_for_list,
            "add_profiles_to_list": self.add_profiles_to_list,
            "remove_profiles_from_list": self.remove_profiles_from_list,
            "get_flows_triggered_by_list": self.get_flows_triggered_by_list,
            "get_ids_for_flows_triggered_by_list": self.get_flows_triggered_by_list,
            "get_profiles": self.get_profiles,
            "create_profile": self.create_profile,
            "get_profile": self.get_profile,
            "update_profile": self.update_profile,
            "get_list_ids_for_profile": self.get_list_ids_for_profile,
            "create_or_update_profile": self.create_or_update_profile,
            "bulk_import_profiles": self.bulk_import_profiles,
            "get_bulk_import_profiles_jobs": self.get_bulk_import_jobs,
            "get_bulk_import_profiles_job": self.get_bulk_import_job,
            "get_errors_for_bulk_import_profiles_job": self.get_import_errors,
            "get_list_for_bulk_import_profiles_job": self.get_job_lists,
            "get_list_ids_for_bulk_import_profiles_job": self.get_job_lists,
            "get_profiles_for_bulk_import_profiles_job": self.get_job_profiles,
            "get_profile_ids_for_bulk_import_profiles_job": self.get_job_profiles,
            "bulk_subscribe_profiles": self.record_subscription_call,
            "bulk_unsubscribe_profiles": self.record_subscription_call,
            "get_segments": self.get_segments,
            "create_segment": self.create_segment,
            "get_segment": self.get_segment,
            "update_segment": self.update_segment,
            "get_flows_triggered_by_segment": self.get_flows_triggered_by_segment,
        }
        self.app = self._build_app()

    def reset(self) -> None:
        api_key, rate_scale = self._initial
        self.account.reset()
        self.faults.clear()
        self.log.reset()
        self.limiter = RateLimiter(scale=rate_scale)
        self.config = KlaviyoConfig(api_keys={api_key: None})

    # -- the gate -------------------------------------------------------------------------------------

    def _authenticate(self, request: Request) -> set[str] | None:
        header = request.headers.get("authorization", "")
        scheme, _, key = header.partition(" ")
        if scheme != "Klaviyo-API-Key" or not key.strip():
            raise ApiError(
                401,
                "not_authenticated",
                "Authentication credentials were not provided.",
                "Missing or invalid authorization scheme. Please use Klaviyo-API-Key.",
            )
        if key.strip() not in self.config.api_keys:
            raise ApiError(
                401,
                "authentication_failed",
                "Incorrect authentication credentials.",
                "Incorrect authentication credentials.",
            )
        scopes = self.config.api_keys[key.strip()]
        return None if scopes is None else set(scopes)

    def _check_request(self, request: Request, raw_body: bytes) -> Call:
        scopes = self._authenticate(request)

        operation, path_params = self.contract.operation_for(request.method, request.url.path)

        if scopes is not None:
            missing = sorted(set(operation.scopes) - scopes)
            if missing:
                raise ApiError(
                    403,
                    "permission_denied",
                    "You do not have permission to perform this action.",
                    "This API key is missing the required scopes: " + ", ".join(missing) + ".",
                )

        self.contract.check_headers(operation, request.headers)
        query = self.contract.parse_query(operation, request.query_params.multi_items())
        body = self.contract.parse_body(operation, request.headers.get("content-type"), raw_body)

        base = str(request.base_url).rstrip("/")
        return Call(request=request, operation=operation, path=path_params, query=query, body=body, base=base)

    def _rate_bucket(self, call: Call) -> tuple[str, RateLimitSpec]:
        if "profile_count" in call.query.get(
            "additional-fields[list]", []
        ) or "profile_count" in call.query.get("additional-fields[segment]", []):
            return f"{call.operation.operation_id}:profile_count", PROFILE_COUNT_LIMIT
        return call.operation.operation_id, call.operation.rate_limit

    def _process(
        self, request: Request, raw_body: bytes
    ) -> tuple[Response, Operation | None, str | None, str | None]:
        """Run the gate and the handler; return the response, the operation, violation and error texts."""
        operation = None
        try:
            call = self._check_request(request, raw_body)
            operation = call.operation
            bucket, spec = self._rate_bucket(call)
            decision = self.limiter.check(bucket, spec)
            if not decision.allowed:
                seconds = decision.retry_after or 1
                document = error_document(
                    429,
                    "throttled",
                    "Request was throttled.",
                    f"Request was throttled. Expected available in {seconds} second{'s' if seconds != 1 else ''}.",
                )
                headers = {"Retry-After": str(seconds)}
                return api_json(429, document, headers), operation, None, "throttled"
            response = self.handlers[operation.operation_id](call)
            response.headers["RateLimit-Limit"] = str(decision.limit)
            response.headers["RateLimit-Remaining"] = str(decision.remaining)
            response.headers["RateLimit-Reset"] = str(decision.reset)
            return response, operation, None, None
        except RequestViolation as violation:
            if operation is None:
                operation, _params, _allowed = self.contract.resolve(request.method, request.url.path)
            document = error_document(
                violation.status,
                violation.code,
                violation.title,
                violation.detail,
                pointer=violation.pointer,
                parameter=violation.parameter,
            )
            return api_json(violation.status, document), operation, violation.detail, None
        except ApiError as error:
            document = error_document(
                error.status,
                error.code,
                error.title,
                error.detail,
                pointer=error.pointer,
                parameter=error.parameter,
                meta=error.meta,
            )
            return api_json(error.status, document), operation, None, error.detail

    async def handle_api(self, request: Request) -> Response:
        started = time.perf_counter()
        self.account.advance_jobs()
        raw_body = await request.body()
        fault = self.faults.take_request_fault(request.method, request.url.path, raw_body)

        response: Response | None = None
        if fault is not None:
            if fault.kind == "reset":
                self._record(request, None, 0, started, fault=fault, error="connection reset by fault")
                await reset_connection(request)
                return Response(status_code=500)
            if fault.kind == "delay":
                await asyncio.sleep(fault.seconds)
            else:
                response = _fault_response(fault, raw_body)

        operation: Operation | None = None
        violation = error = None
        if response is None:
            response, operation, violation, error = self._process(request, raw_body)
        else:
            operation = self.contract.resolve(request.method, request.url.path)[0]

        response_violation = None
        if self.config.validate_responses and operation is not None and fault is None and response.body:
            problems = self.contract.response_errors(
                operation, response.status_code, json.loads(bytes(response.body))
            )
            response_violation = "; ".join(problems[:3]) or None

        if fault is not None and fault.kind == "truncated_json":
            response = _truncate(response, fault)
        self._record(
            request,
            operation,
            response.status_code,
            started,
            fault=fault,
            violation=violation,
            error=error,
            response_violation=response_violation,
        )
        return response

    def _record(
        self,
        request: Request,
        operation: Operation | None,
        status: int,
        started: float,
        *,
        fault: FaultRule | None = None,
        violation: str | None = None,
        error: str | None = None,
        response_violation: str | None = None,
    ) -> None:
        self.log.record(
            method=request.method,
            path=request.url.path,
            query=request.url.query,
            template=operation.template if operation else None,
            status=status,
            started=started,
            violation=violation,
            error=error,
            fault=fault.kind if fault else None,
            response_violation=response_violation,
        )

    # -- resources ------------------------------------------------------------------------------------

    def _list_resource(self, call: Call, record: KlaviyoList, *, with_count: bool = False) -> dict[str, Any]:
        attributes: dict[str, Any] = {
            "name": record.name,
            "created": iso(record.created),
            "updated": iso(record.updated),
            "opt_in_process": record.opt_in_process,
        }
        wanted = call.query.get("fields[list]")
        if wanted:
            attributes = {key: value for key, value in attributes.items() if key in wanted}
        if with_count:
            attributes["profile_count"] = len(record.members)
        return _group_resource(call, "list", record.id, attributes)

    def _profile_resource(self, call: Call, profile: Profile) -> dict[str, Any]:
        location_keys = ("address1", "address2", "city", "country", "latitude", "longitude", "region", "zip")
        attributes: dict[str, Any] = {name: getattr(profile, name) for name in PROFILE_FIELDS}
        attributes.update(
            {
                "created": iso(profile.created),
                "updated": iso(profile.updated),
                "last_event_date": None,
                "location": {key: profile.location.get(key) for key in (*location_keys, "timezone", "ip")},
                "properties": dict(profile.properties),
            }
        )
        wanted = call.query.get("fields[profile]")
        if wanted:
            tops = {name.split(".", 1)[0] for name in wanted}
            attributes = {key: value for key, value in attributes.items() if key in tops}
        if "subscriptions" in call.query.get("additional-fields[profile]", []):
            attributes["subscriptions"] = profile.subscriptions()
        base = call.url(f"/api/profiles/{profile.id}")
        return {
            "type": "profile",
            "id": profile.id,
            "attributes": attributes,
            "relationships": {
                name: {"links": {"self": f"{base}/relationships/{name}", "related": f"{base}/{name}"}}
                for name in ("lists", "segments")
            },
            "links": {"self": base},
        }

    def _job_resource(self, call: Call, job: BulkJob) -> dict[str, Any]:
        base = call.url(f"/api/profile-bulk-import-jobs/{job.id}")
        attributes: dict[str, Any] = {
            "status": job.status,
            "created_at": iso(job.created_at),
            "total_count": len(job.payloads),
            "completed_count": job.completed_count,
            "failed_count": job.failed_count,
            "completed_at": iso(job.completed_at),
            "expires_at": iso(job.expires_at),
            "started_at": iso(job.started_at),
        }
        wanted = call.query.get("fields[profile-bulk-import-job]")
        if wanted:
            attributes = {key: value for key, value in attributes.items() if key in wanted}
        return {
            "type": "profile-bulk-import-job",
            "id": job.id,
            "attributes": attributes,
            "relationships": {
                "lists": {
                    "data": [{"type": "list", "id": list_id} for list_id in job.list_ids],
                    "links": {"self": f"{base}/relationships/lists", "related": f"{base}/lists"},
                },
                "profiles": {
                    "links": {"self": f"{base}/relationships/profiles", "related": f"{base}/profiles"}
                },
                "import-errors": {
                    "links": {
                        "self": f"{base}/relationships/import-errors",
                        "related": f"{base}/import-errors",
                    }
                },
            },
            "links": {"self": base},
        }

    def _flow_resource(self, call: Call, flow: Flow) -> dict[str, Any]:
        base = call.url(f"/api/flows/{flow.id}")
        moment = iso(now_utc())
        return {
            "type": "flow",
            "id": flow.id,
            "attributes": {
                "name": flow.name,
                "status": flow.status,
                "archived": False,
                "created": moment,
                "updated": moment,
                "trigger_type": flow.trigger_type,
            },
            "relationships": {
                name: {"links": {"self": f"{base}/relationships/{name}", "related": f"{base}/{name}"}}
                for name in ("flow-actions", "tags")
            },
            "links": {"self": base},
        }

    def _get_list(self, list_id: str) -> KlaviyoList:
        record = self.account.lists.get(list_id)
        if record is None:
            raise not_found("list", list_id)
        return record

    def _get_job(self, job_id: str) -> BulkJob:
        job = self.account.jobs.get(job_id)
        if job is None:
            raise not_found("profile bulk import job", job_id)
        return job

    def _filter(self, call: Call) -> FilterNode | None:
        text = call.query.get("filter")
        return None if text is None else parse_filter(text, call.operation.filters)

    def _filtered_page(
        self, call: Call, records: list[_Record], field: Callable[[_Record, str], Any]
    ) -> tuple[list[_Record], dict[str, Any]]:
        """One page of lists or segments after the call's filter and sort (default ``id``, ties by creation)."""
        node = self._filter(call)
        kept = [record for record in records if node is None or matches(node, partial(field, record))]
        sort = call.query.get("sort", "id")
        sort_field = sort.lstrip("-")
        kept.sort(key=lambda r: _sort_key(field(r, sort_field), r.seq))
        return paginate(
            call,
            kept,
            lambda r: _sort_key(field(r, sort_field), r.seq),
            descending=sort.startswith("-"),
            default_size=10,
        )

    # -- accounts and lists ---------------------------------------------------------------------------

    def get_accounts(self, call: Call) -> Response:
        base = call.url("/api/accounts/SBXacc")
        account = {
            "type": "account",
            "id": "SBXacc",
            "attributes": {
                "test_account": True,
                "contact_information": {
                    "default_sender_name": "Sandbox Shop",
                    "default_sender_email": "shop@sandbox.example",
                    "website_url": "https://sandbox.example",
                    "organization_name": "Sandbox Shop",
                    "street_address": {
                        "address1": "1 Sandbox Street",
                        "address2": None,
                        "city": "Boston",
                        "region": "MA",
                        "country": "US",
                        "zip": "02110",
                    },
                },
                "industry": "Retail",
                "timezone": "UTC",
                "preferred_currency": "USD",
                "public_api_key": "SBXpub",
                "locale": "en-US",
            },
            "links": {"self": base},
        }
        return api_json(200, {"data": [account], "links": {"self": str(call.request.url)}})

    def get_lists(self, call: Call) -> Response:
        page, links = self._filtered_page(call, list(self.account.lists.values()), _list_field)
        document: dict[str, Any] = {"data": [self._list_resource(call, r) for r in page], "links": links}
        if "flow-triggers" in call.query.get("include", []):
            document["included"] = [
                self._flow_resource(call, flow) for r in page for flow in self._flows_for(r)
            ]
        return api_json(200, document)

    def create_list(self, call: Call) -> Response:
        attributes = call.body["data"]["attributes"]
        # Deliberately no lookup by name: Klaviyo makes a second list with the same name.
        record = self.account.create_list(attributes["name"], attributes.get("opt_in_process"))
        return api_json(
            201, {"data": self._list_resource(call, record), "links": {"self": str(call.request.url)}}
        )

    def get_list(self, call: Call) -> Response:
        record = self._get_list(call.path["id"])
        with_count = "profile_count" in call.query.get("additional-fields[list]", [])
        return api_json(
            200,
            {
                "data": self._list_resource(call, record, with_count=with_count),
                "links": {"self": str(call.request.url)},
            },
        )

    def update_list(self, call: Call) -> Response:
        record = self._get_list(call.path["id"])
        data = call.body["data"]
        if data["id"] != record.id:
            raise _id_conflict()
        attributes = data["attributes"]
        # null leaves a field as it is; a name is not checked for uniqueness, as in Klaviyo.
        if attributes.get("name") is not None:
            if not isinstance(attributes["name"], str) or not attributes["name"].strip():
                raise _empty_name("list")
            record.name = attributes["name"]
        if attributes.get("opt_in_process") is not None:
            record.opt_in_process = attributes["opt_in_process"]
        record.updated = now_utc()
        return api_json(
            200, {"data": self._list_resource(call, record), "links": {"self": str(call.request.url)}}
        )

    def delete_list(self, call: Call) -> Response:
        self._get_list(call.path["id"])
        del self.account.lists[call.path["id"]]
        return Response(status_code=204)

    def _members(self, call: Call) -> list[tuple[str, tuple[int, Any]]]:
        """The list's members as ``(profile id, (join seq, joined at))`` in join order, filtered.

        Join order is also ``joined_group_at`` order, so that sort needs no work. Profiles are looked
        up only when a filter needs them: a 50,000-member list is paged 500 times.
        """
        record = self._get_list(call.path["id"])
        node = self._filter(call)
        if node is None:
            return list(record.members.items())
        profiles = self.account.profiles
        return [
            (profile_id, joined)
            for profile_id, joined in record.members.items()
            if matches(node, partial(_member_field, profiles[profile_id], joined[1]))
        ]

    def get_profile_ids_for_list(self, call: Call) -> Response:
        members = self._members(call)
        descending = call.query.get("sort", "").startswith("-")
        page, links = paginate(call, members, lambda m: [m[1][0]], descending=descending)
        data = [{"type": "profile", "id": profile_id} for profile_id, _joined in page]
        return api_json(200, {"data": data, "links": links})

    def get_profiles_for_list(self, call: Call) -> Response:
        members = self._members(call)
        descending = call.query.get("sort", "").startswith("-")
        page, links = paginate(call, members, lambda m: [m[1][0]], descending=descending)
        data = [
            self._profile_resource(call, self.account.profiles[profile_id]) for profile_id, _joined in page
        ]
        return api_json(200, {"data": data, "links": links})

    def _member_ids(self, call: Call) -> list[str]:
        items = call.body["data"]
        if len(items) > MAX_LIST_MEMBER_IDS:
            raise ApiError(
                400,
                "invalid",
                "Invalid input.",
                f"At most {MAX_LIST_MEMBER_IDS} profiles may be sent in one request; got {len(items)}.",
                pointer="/data",
            )
        for index, item in enumerate(items):
            if item["id"] not in self.account.profiles:
                # Unknown ids fail the whole request: nothing is added or removed.
                raise ApiError(
                    400,
                    "invalid",
                    "Invalid input.",
                    f"Profile with id {item['id']} does not exist.",
                    pointer=f"/data/{index}/id",
                )
        return [item["id"] for item in items]

    def add_profiles_to_list(self, call: Call) -> Response:
        record = self._get_list(call.path["id"])
        self.account.add_members(record, self._member_ids(call))
        return Response(status_code=204)

    def remove_profiles_from_list(self, call: Call) -> Response:
        record = self._get_list(call.path["id"])
        for profile_id in self._member_ids(call):
            record.members.pop(profile_id, None)
        return Response(status_code=204)

    def _flows_for(self, record: KlaviyoList | KlaviyoSegment) -> list[Flow]:
        return self.config.flows.get(record.id) or self.config.flows.get(record.name) or []

    def get_flows_triggered_by_list(self, call: Call) -> Response:
        record = self._get_list(call.path["id"])
        flows = self._flows_for(record)
        if call.operation.operation_id == "get_ids_for_flows_triggered_by_list":
            data: list[dict[str, Any]] = [{"type": "flow", "id": flow.id} for flow in flows]
        else:
            data = [self._flow_resource(call, flow) for flow in flows]
        return api_json(200, {"data": data, "links": {"self": str(call.request.url)}})

    # -- profiles -------------------------------------------------------------------------------------

    def get_profiles(self, call: Call) -> Response:
        node = self._filter(call)
        candidates: Iterable[Profile]
        emails = equality_values(node, "email") if node is not None else None
        if emails is not None:
            ids = {
                self.account.by_email[e] for e in emails if isinstance(e, str) and e in self.account.by_email
            }
            candidates = sorted((self.account.profiles[i] for i in ids), key=lambda p: p.seq)
        else:
            candidates = self.account.profiles.values()
        sort = call.query.get("sort")
        # A client paging through a filtered scan of the whole account asks for the same filter once per
        # page; filtering every profile again for each page would make the scan quadratic.
        reuse_key = (call.query.get("filter"), id(self.account.profiles), self.account.revision)
        if emails is None and node is not None and sort is None and self._filtered[0] == reuse_key:
            profiles = self._filtered[1]
        else:
            profiles = (
                list(candidates)
                if node is None
                else [p for p in candidates if matches(node, partial(_profile_field, p))]
            )
            if emails is None and node is not None and sort is None:
                self._filtered = (reuse_key, profiles)
        if sort is None:
            # Creation order is storage order: no sorting while a client walks 50,000 profiles.
            page, links = paginate(call, profiles, lambda p: [p.seq])
        else:
            sort_field = sort.lstrip("-")
            profiles.sort(key=lambda p: _sort_key(_profile_field(p, sort_field), p.seq))
            page, links = paginate(
                call,
                profiles,
                lambda p: _sort_key(_profile_field(p, sort_field), p.seq),
                descending=sort.startswith("-"),
            )
        return api_json(200, {"data": [self._profile_resource(call, p) for p in page], "links": links})

    def get_profile(self, call: Call) -> Response:
        profile = self.account.profiles.get(call.path["id"])
        if profile is None:
            raise not_found("profile", call.path["id"])
        return api_json(
            200, {"data": self._profile_resource(call, profile), "links": {"self": str(call.request.url)}}
        )

    def get_list_ids_for_profile(self, call: Call) -> Response:
        if call.path["id"] not in self.account.profiles:
            raise not_found("profile", call.path["id"])
        data = [{"type": "list", "id": list_id} for list_id in self.account.profile_lists(call.path["id"])]
        return api_json(200, {"data": data, "links": {"self": str(call.request.url)}})

    def _check_profile_payload(self, attributes: dict[str, Any], pointer: str, raw: Any) -> None:
        if len(json.dumps(raw)) > MAX_PROFILE_BYTES:
            raise ApiError(
                400, "invalid", "Invalid input.", "A profile may not exceed 100 KB.", pointer=pointer
            )
        email = attributes.get("email")
        if email is not None and not is_valid_email(email):
            raise ApiError(
                400,
                "invalid",
                "Invalid input.",
                "Invalid email address.",
                pointer=f"{pointer}/attributes/email",
            )
        if not any(attributes.get(name) for name in ("email", "phone_number", "external_id")):
            raise ApiError(
                400,
                "invalid",
                "Invalid input.",
                "One of 'email', 'phone_number' or 'external_id' is required.",
                pointer=f"{pointer}/attributes",
            )

    def _duplicate(self, existing_id: str) -> ApiError:
        return ApiError(
            409,
            "duplicate_profile",
            "Conflict.",
            "A profile already exists with one of these identifiers.",
            pointer="/data/attributes",
            meta={"duplicate_profile_id": existing_id},
        )

    def create_profile(self, call: Call) -> Response:
        data = call.body["data"]
        attributes = data["attributes"]
        self._check_profile_payload(attributes, "/data", data)
        owner = self.account.owner_of(attributes)
        if owner is not None:
            raise self._duplicate(owner)
        profile = self.account.create_profile()
        self.account.write_profile(profile, attributes, null_clears=False)
        return api_json(
            201, {"data": self._profile_resource(call, profile), "links": {"self": str(call.request.url)}}
        )

    def update_profile(self, call: Call) -> Response:
        data = call.body["data"]
        if data.get("id") != call.path["id"]:
            raise _id_conflict()
        profile = self.account.profiles.get(call.path["id"])
        if profile is None:
            raise not_found("profile", call.path["id"])
        attributes = data.get("attributes") or {}
        if attributes.get("email") is not None and not is_valid_email(attributes["email"]):
            raise ApiError(
                400, "invalid", "Invalid input.", "Invalid email address.", pointer="/data/attributes/email"
            )
        try:
            self.account.write_profile(profile, attributes, null_clears=True)
        except DuplicateProfile as conflict:
            raise self._duplicate(conflict.existing_id) from None
        patch = (data.get("meta") or {}).get("patch_properties")
        if patch:
            self.account.patch_properties(profile, patch)
        return api_json(
            200, {"data": self._profile_resource(call, profile), "links": {"self": str(call.request.url)}}
        )

    def create_or_update_profile(self, call: Call) -> Response:
        data = call.body["data"]
        attributes = data["attributes"]
        self._check_profile_payload(attributes, "/data", data)
        profile: Profile | None
        if data.get("id"):
            profile = self.account.profiles.get(data["id"])
            if profile is None:
                raise ApiError(
                    404, "not_found", "Not found.", f"A profile with id {data['id']} does not exist."
                )
        else:
            profile = self.account.find_profile(attributes)
        created = profile is None
        if profile is None:
            profile = self.account.create_profile()
        try:
            self.account.write_profile(profile, attributes, null_clears=True)
        except DuplicateProfile as conflict:
            if created:
                del self.account.profiles[profile.id]
            raise self._duplicate(conflict.existing_id) from None
        patch = (data.get("meta") or {}).get("patch_properties")
        if patch:
            self.account.patch_properties(profile, patch)
        return api_json(
            201 if created else 200,
            {"data": self._profile_resource(call, profile), "links": {"self": str(call.request.url)}},
        )

    # -- bulk import jobs -----------------------------------------------------------------------------

    def bulk_import_profiles(self, call: Call) -> Response:
        data = call.body["data"]
        payloads = data["attributes"]["profiles"]["data"]
        pointer_base = "/data/attributes/profiles/data"
        if not payloads:
            raise ApiError(
                400, "invalid", "Invalid input.", "At least one profile is required.", pointer=pointer_base
            )
        if len(payloads) > MAX_BULK_PROFILES:
            raise ApiError(
                400,
                "invalid",
                "Invalid input.",
                f"At most {MAX_BULK_PROFILES} profiles may be imported in one job; got {len(payloads)}.",
                pointer=pointer_base,
            )
        # One bad profile rejects the whole request and nothing is imported.
        seen: dict[str, int] = {}
        for index, payload in enumerate(payloads):
            attributes = payload["attributes"]
            self._check_profile_payload(attributes, f"{pointer_base}/{index}", payload)
            email = attributes.get("email")
            if isinstance(email, str):
                if email in seen:
                    raise ApiError(
                        400,
                        "invalid",
                        "Invalid input.",
                        f"Profiles {seen[email]} and {index} have the same email.",
                        pointer=f"{pointer_base}/{index}/attributes/email",
                    )
                seen[email] = index
        list_refs = (data.get("relationships") or {}).get("lists", {}).get("data", [])
        for index, ref in enumerate(list_refs):
            if ref["id"] not in self.account.lists:
                raise ApiError(
                    400,
                    "invalid",
                    "Invalid input.",
                    f"A list with id {ref['id']} does not exist.",
                    pointer=f"/data/relationships/lists/data/{index}/id",
                )

        delay = self.config.job_delay_base + self.config.job_delay_per_1000 * len(payloads) / 1000
        start = time.monotonic()
        job = BulkJob(
            id=new_short_id(26),
            seq=self.account.next_seq(),
            created_at=now_utc(),
            started_mono=start + delay * 0.25,
            finish_mono=start + delay,
            payloads=payloads,
            list_ids=[ref["id"] for ref in list_refs],
        )
        for rule in self.faults.take_job_faults():
            if rule.kind == "job_fail_emails":
                job.fail_emails.update({email: rule.reason for email in rule.emails})
            elif rule.kind == "job_cancel":
                job.cancel = True
            elif rule.kind == "hold_jobs":
                job.held = True
            elif rule.kind == "job_never_finishes":
                job.never_finishes = True
        self.account.jobs[job.id] = job
        return api_json(
            202, {"data": self._job_resource(call, job), "links": {"self": str(call.request.url)}}
        )

    def get_bulk_import_jobs(self, call: Call) -> Response:
        node = self._filter(call)
        jobs = [
            job
            for job in self.account.jobs.values()
            if node is None or matches(node, partial(_job_field, job))
        ]
        descending = call.query.get("sort", "created_at").startswith("-")
        page, links = paginate(call, jobs, lambda j: [j.seq], descending=descending)
        return api_json(200, {"data": [self._job_resource(call, job) for job in page], "links": links})

    def get_bulk_import_job(self, call: Call) -> Response:
        job = self._get_job(call.path["job_id"])
        return api_json(
            200, {"data": self._job_resource(call, job), "links": {"self": str(call.request.url)}}
        )

    def get_import_errors(self, call: Call) -> Response:
        job = self._get_job(call.path["id"])
        page, links = paginate(call, job.errors, lambda e: [e.index])
        data = [
            {
                "type": "import-error",
                "id": error.id,
                "attributes": {
                    "code": error.code,
                    "title": error.title,
                    "detail": error.detail,
                    "source": {"pointer": f"/data/attributes/profiles/data/{error.index}"},
                    "original_payload": error.payload,
                },
            }
            for error in page
        ]
        return api_json(200, {"data": data, "links": links})

    def get_job_lists(self, call: Call) -> Response:
        job = self._get_job(call.path["id"])
        records = [self.account.lists[i] for i in job.list_ids if i in self.account.lists]
        if call.operation.operation_id == "get_list_ids_for_bulk_import_profiles_job":
            data: list[dict[str, Any]] = [{"type": "list", "id": r.id} for r in records]
        else:
            data = [self._list_resource(call, r) for r in records]
        return api_json(200, {"data": data, "links": {"self": str(call.request.url)}})

    def get_job_profiles(self, call: Call) -> Response:
        job = self._get_job(call.path["id"])
        profiles = [self.account.profiles[i] for i in job.profile_ids if i in self.account.profiles]
        indexed = list(enumerate(profiles))
        page, links = paginate(call, indexed, lambda item: [item[0]])
        if call.operation.operation_id == "get_profile_ids_for_bulk_import_profiles_job":
            data: list[dict[str, Any]] = [{"type": "profile", "id": p.id} for _i, p in page]
        else:
            data = [self._profile_resource(call, p) for _i, p in page]
        return api_json(200, {"data": data, "links": links})

    def record_subscription_call(self, call: Call) -> Response:
        # Served so a client that calls it gets a realistic answer; recorded so tests can prove it never did.
        profiles = call.body["data"]["attributes"]["profiles"]["data"]
        self.account.subscription_calls.append(
            {"operation": call.operation.operation_id, "profiles": len(profiles), "at": iso(now_utc())}
        )
        return Response(status_code=202)

    # -- segments (definitions are stored and checked, never evaluated) --------------------------------

    def _segment_resource(self, call: Call, record: KlaviyoSegment) -> dict[str, Any]:
        attributes: dict[str, Any] = {
            "name": record.name,
            "definition": record.definition,
            "created": iso(record.created),
            "updated": iso(record.updated),
        }
        wanted = call.query.get("fields[segment]")
        if wanted:
            tops = {name.split(".", 1)[0] for name in wanted}
            attributes = {key: value for key, value in attributes.items() if key in tops}
        # The schema requires these three whatever the sparse fieldset asks for.
        attributes.update(
            is_active=record.is_active,
            is_processing=time.monotonic() < record.processing_until,
            is_starred=record.is_starred,
        )
        return _group_resource(call, "segment", record.id, attributes)

    def _get_segment(self, segment_id: str) -> KlaviyoSegment:
        record = self.account.segments.get(segment_id)
        if record is None:
            raise not_found("segment", segment_id)
        return record

    @staticmethod
    def _check_definition(definition: dict[str, Any], pointer: str) -> None:
        """What Klaviyo's segment builder insists on beyond the schema, read pessimistically.

        A definition needs at least one group and every group at least one condition; at most 100
        conditions in all (Klaviyo's documented cap); a profile-property condition names a built-in
        field or a custom property written ``properties['name']``.
        """
        groups = definition["condition_groups"]
        if not groups:
            raise ApiError(
                400,
                "invalid",
                "Invalid input.",
                "A segment needs at least one condition group.",
                pointer=f"{pointer}/condition_groups",
            )
        total = 0
        for g, group in enumerate(groups):
            if not group["conditions"]:
                raise ApiError(
                    400,
                    "invalid",
                    "Invalid input.",
                    "A condition group needs at least one condition.",
                    pointer=f"{pointer}/condition_groups/{g}/conditions",
                )
            for c, condition in enumerate(group["conditions"]):
                total += 1
                if condition.get("type") == "profile-property":
                    name = condition["property"]
                    if name not in BUILT_IN_PROFILE_PROPERTIES and not CUSTOM_PROPERTY.fullmatch(name):
                        raise ApiError(
                            400,
                            "invalid",
                            "Invalid input.",
                            f"'{name}' is not a profile property; write custom properties as properties['name'].",
                            pointer=f"{pointer}/condition_groups/{g}/conditions/{c}/property",
                        )
        if total > MAX_SEGMENT_CONDITIONS:
            raise ApiError(
                400,
                "invalid",
                "Invalid input.",
                f"A segment may have at most {MAX_SEGMENT_CONDITIONS} conditions; got {total}.",
                pointer=f"{pointer}/condition_groups",
            )

    def get_segments(self, call: Call) -> Response:
        page, links = self._filtered_page(call, list(self.account.segments.values()), _segment_field)
        return api_json(200, {"data": [self._segment_resource(call, r) for r in page], "links": links})

    def create_segment(self, call: Call) -> Response:
        attributes = call.body["data"]["attributes"]
        if not attributes["name"].strip():
            raise _empty_name("segment")
        self._check_definition(attributes["definition"], "/data/attributes/definition")
        # No lookup by name: nothing says Klaviyo keeps segment names unique, so a repeat makes a second one.
        record = self.account.create_segment(
            attributes["name"], attributes["definition"], is_starred=bool(attributes.get("is_starred"))
        )
        return api_json(
            201, {"data": self._segment_resource(call, record), "links": {"self": str(call.request.url)}}
        )

    def get_segment(self, call: Call) -> Response:
        record = self._get_segment(call.path["id"])
        if "profile_count" in call.query.get("additional-fields[segment]", []):
            # Counting members would mean evaluating the definition, which the sandbox never pretends to do.
            raise ApiError(
                400,
                "invalid",
                "Invalid input.",
                "The sandbox stores segment definitions but does not evaluate them, so it cannot count members.",
                parameter="additional-fields[segment]",
            )
        return api_json(
            200, {"data": self._segment_resource(call, record), "links": {"self": str(call.request.url)}}
        )

    def update_segment(self, call: Call) -> Response:
        record = self._get_segment(call.path["id"])
        data = call.body["data"]
        if data["id"] != record.id:
            raise _id_conflict()
        attributes = {key: value for key, value in data["attributes"].items() if value is not None}
        if "is_active" in attributes and len(attributes) > 1:
            raise ApiError(
                400,
                "invalid",
                "Invalid input.",
                "is_active must be the only attribute when a segment is activated or deactivated.",
                pointer="/data/attributes/is_active",
            )
        if "name" in attributes:
            if not attributes["name"].strip():
                raise _empty_name("segment")
            record.name = attributes["name"]
        if "definition" in attributes:
            self._check_definition(attributes["definition"], "/data/attributes/definition")
            record.definition = attributes["definition"]
            record.processing_until = time.monotonic() + SEGMENT_PROCESSING_SECONDS
        if "is_active" in attributes:
            record.is_active = attributes["is_active"]
        if "is_starred" in attributes:
            record.is_starred = attributes["is_starred"]
        record.updated = now_utc()
        return api_json(
            200, {"data": self._segment_resource(call, record), "links": {"self": str(call.request.url)}}
        )

    def get_flows_triggered_by_segment(self, call: Call) -> Response:
        record = self._get_segment(call.path["id"])
        flows = self._flows_for(record)
        data = [self._flow_resource(call, flow) for flow in flows]
        return api_json(200, {"data": data, "links": {"self": str(call.request.url)}})

    # -- admin ----------------------------------------------------------------------------------------

    def state_json(self) -> dict[str, Any]:
        self.account.advance_jobs()
        memberships: dict[str, list[str]] = {}
        for record in self.account.lists.values():
            for profile_id in record.members:
                memberships.setdefault(profile_id, []).append(record.id)
        return {
            "profiles": [p.state_json(memberships.get(p.id, [])) for p in self.account.profiles.values()],
            "lists": [
                {
                    "id": r.id,
                    "name": r.name,
                    "created": iso(r.created),
                    "opt_in_process": r.opt_in_process,
                    "members": list(r.members),
                }
                for r in self.account.lists.values()
            ],
            "jobs": [
                {
                    "id": j.id,
                    "status": j.status,
                    "total_count": len(j.payloads),
                    "completed_count": j.completed_count,
                    "failed_count": j.failed_count,
                    "list_ids": j.list_ids,
                    "held": j.held,
                }
                for j in self.account.jobs.values()
            ],
            "segments": [
                {
                    "id": r.id,
                    "name": r.name,
                    "definition": r.definition,
                    "created": iso(r.created),
                    "is_active": r.is_active,
                }
                for r in self.account.segments.values()
            ],
            "subscription_calls": list(self.account.subscription_calls),
        }

    def seed_profiles(self, specs: list[dict[str, Any]]) -> list[str]:
        """Create or update profiles from admin JSON (see the README for the accepted keys)."""
        ids = []
        for spec in specs:
            attributes = {name: spec[name] for name in PROFILE_FIELDS if name in spec}
            attributes["properties"] = spec.get("properties") or {}
            if "location" in spec:
                attributes["location"] = spec["location"]
            profile = self.account.find_profile(attributes) or self.account.create_profile()
            self.account.write_profile(profile, attributes, null_clears=False)
            consent = spec.get("consent")
            if consent is None and "subscribed" in spec:
                consent = "SUBSCRIBED" if spec["subscribed"] else "UNSUBSCRIBED"
            if consent is not None:
                profile.consent = consent
                profile.consent_timestamp = now_utc()
            suppressed = spec.get("suppressed")
            if suppressed:
                reason = suppressed if isinstance(suppressed, str) else "USER_SUPPRESSED"
                profile.suppression = [{"reason": reason, "timestamp": iso(now_utc()) or ""}]
            for name in spec.get("lists", []):
                record = next((r for r in self.account.lists.values() if r.name == name), None)
                if record is None:
                    record = self.account.create_list(name)
                self.account.add_members(record, [profile.id])
            ids.append(profile.id)
        return ids

    def update_config(self, changes: dict[str, Any]) -> None:
        known = {
            "rate_scale",
            "rate_limits_enabled",
            "job_delay_base",
            "job_delay_per_1000",
            "api_keys",
            "flows",
            "validate_responses",
        }
        unknown = set(changes) - known
        if unknown:
            raise ValueError(f"unknown config keys: {sorted(unknown)}")
        if "rate_scale" in changes:
            self.limiter.scale = float(changes["rate_scale"])
            self.limiter.reset()
        if "rate_limits_enabled" in changes:
            self.limiter.enabled = bool(changes["rate_limits_enabled"])
        for name in ("job_delay_base", "job_delay_per_1000"):
            if name in changes:
                setattr(self.config, name, float(changes[name]))
        if "api_keys" in changes:
            self.config.api_keys = {
                key: (None if s is None else list(s)) for key, s in changes["api_keys"].items()
            }
        if "flows" in changes:
            self.config.flows = {
                key: [Flow(**flow) for flow in flows] for key, flows in changes["flows"].items()
            }
        if "validate_responses" in changes:
            self.config.validate_responses = bool(changes["validate_responses"])

    def _build_app(self) -> FastAPI:
        app = FastAPI(title="Klaviyo sandbox", docs_url=None, redoc_url=None, openapi_url=None)
        sandbox = self

        @app.post("/__sandbox/reset")
        async def reset(request: Request) -> dict[str, Any]:
            require_loopback(request)
            sandbox.reset()
            return {"ok": True}

        @app.get("/__sandbox/state")
        async def state(request: Request) -> dict[str, Any]:
            require_loopback(request)
            return sandbox.state_json()

        @app.post("/__sandbox/profiles")
        async def seed(request: Request, specs: list[dict[str, Any]] = Body(...)) -> dict[str, Any]:  # noqa: B008
            require_loopback(request)
            return {"ids": sandbox.seed_profiles(specs)}

        @app.post("/__sandbox/lists")
        async def seed_list(request: Request, spec: dict[str, Any] = Body(...)) -> dict[str, Any]:  # noqa: B008
            require_loopback(request)
            record = sandbox.account.create_list(spec["name"], spec.get("opt_in_process"))
            ids = [
                sandbox.account.by_email[e]
                for e in spec.get("member_emails", [])
                if e in sandbox.account.by_email
            ]
            sandbox.account.add_members(record, ids)
            return {"id": record.id, "name": record.name, "members": list(record.members)}

        @app.get("/__sandbox/writes")
        async def writes(request: Request, since: int = 0) -> dict[str, Any]:
            require_loopback(request)
            log = sandbox.account.writes
            return {"writes": log[since:], "last_seq": len(log)}

        @app.get("/__sandbox/requests")
        async def requests_log(request: Request, since: int = 0) -> dict[str, Any]:
            require_loopback(request)
            entries = sandbox.log.since(since)
            return {"requests": entries, "last_seq": entries[-1]["seq"] if entries else since}

        @app.get("/__sandbox/stats")
        async def stats(request: Request) -> dict[str, Any]:
            require_loopback(request)
            return {**sandbox.log.stats(), "subscription_calls": len(sandbox.account.subscription_calls)}

        @app.get("/__sandbox/faults")
        async def list_faults(request: Request) -> list[dict[str, Any]]:
            require_loopback(request)
            return sandbox.faults.as_json()

        @app.post("/__sandbox/faults")
        async def add_faults(request: Request, spec: Any = Body(...)) -> Any:  # noqa: B008
            require_loopback(request)
            return _add_fault_rules(sandbox.faults, spec)

        @app.delete("/__sandbox/faults")
        async def clear_faults(request: Request) -> dict[str, Any]:
            require_loopback(request)
            sandbox.faults.clear()
            return {"ok": True}

        @app.post("/__sandbox/jobs/release")
        async def release_jobs(request: Request) -> dict[str, Any]:
            require_loopback(request)
            return {"released": sandbox.account.release_jobs()}

        @app.get("/__sandbox/config")
        async def get_config(request: Request) -> dict[str, Any]:
            require_loopback(request)
            return sandbox.config.as_json(sandbox.limiter)

        @app.put("/__sandbox/config")
        async def put_config(request: Request, changes: dict[str, Any] = Body(...)) -> Any:  # noqa: B008
            require_loopback(request)
            try:
                sandbox.update_config(changes)
            except (ValueError, TypeError) as exc:
                return JSONResponse({"error": str(exc)}, status_code=400)
            return sandbox.config.as_json(sandbox.limiter)

        @app.api_route("/{path:path}", methods=["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"])
        async def api(request: Request, path: str) -> Response:
            return await sandbox.handle_api(request)

        return app

    def asgi(self) -> RawSendCapture:
        return RawSendCapture(self.app)


def _add_fault_rules(book: FaultBook, spec: Any) -> Any:
    specs = spec if isinstance(spec, list) else [spec]
    try:
        rules = [book.add(item) for item in specs]
    except (FaultRuleError, TypeError) as exc:
        return JSONResponse({"error": str(exc)}, status_code=400)
    return {"rules": [rule.as_json() for rule in rules]}


def _sort_key(value: Any, seq: int) -> list[Any]:
    """A JSON-friendly, totally ordered key: missing values sort first, ties by creation order."""
    if value is None:
        return ["", seq]
    if hasattr(value, "isoformat"):
        return [value.isoformat(), seq]
    return [value, seq]


def _group_resource(call: Call, kind: str, ident: str, attributes: dict[str, Any]) -> dict[str, Any]:
    """A list or segment as a JSON:API resource; both relate to profiles, tags and flow triggers."""
    base = call.url(f"/api/{kind}s/{ident}")
    return {
        "type": kind,
        "id": ident,
        "attributes": attributes,
        "relationships": {
            name: {"links": {"self": f"{base}/relationships/{name}", "related": f"{base}/{name}"}}
            for name in ("profiles", "tags", "flow-triggers")
        },
        "links": {"self": base},
    }


def _id_conflict() -> ApiError:
    return ApiError(
        409,
        "conflict",
        "Conflict.",
        "The id in the body does not match the id in the URL.",
        pointer="/data/id",
    )


def _empty_name(kind: str) -> ApiError:
    return ApiError(
        400,
        "invalid",
        "Invalid input.",
        f"A {kind} name cannot be empty.",
        pointer="/data/attributes/name",
    )


def _list_field(record: KlaviyoList, name: str) -> Any:
    if name == "id":
        return record.id
    if name in ("name", "created", "updated"):
        return getattr(record, name)
    return None


def _segment_field(record: KlaviyoSegment, name: str) -> Any:
    if name in ("created", "updated"):
        return iso(getattr(record, name))
    return getattr(record, name)


def _job_field(job: BulkJob, name: str) -> Any:
    return job.status if name == "status" else None


def _member_field(profile: Profile, joined: Any, name: str) -> Any:
    return joined if name == "joined_group_at" else _profile_field(profile, name)


def _profile_field(profile: Profile, name: str) -> Any:
    if name in PROFILE_FIELDS or name in ("id", "created", "updated"):
        return getattr(profile, name)
    # Fields the sandbox does not model (``_kx``, push tokens) match nothing.
    return None


def _fault_response(rule: FaultRule, raw_body: bytes) -> Response | None:
    """The canned answer of a request fault; ``None`` when the request should go on."""
    headers = {"Retry-After": str(rule.retry_after)} if rule.retry_after is not None else None
    if rule.kind == "status":
        status = rule.status or 500
        if rule.body is None:
            document = error_document(status, "error", "Sandbox fault.", f"Injected status {status}.")
            return api_json(status, document, headers)
        if isinstance(rule.body, str):
            return Response(rule.body, status_code=status, media_type="text/plain", headers=headers)
        return api_json(status, rule.body, headers)
    if rule.kind == "html":
        page = "<!DOCTYPE html><html><head><title>Just a moment...</title></head><body>Checking your browser</body></html>"
        merged = {"cf-mitigated": "challenge", **(headers or {})}
        return Response(page, status_code=rule.status or 403, media_type="text/html", headers=merged)
    if rule.kind == "reject_400_email":
        email = _first_email(raw_body) or "unknown@example.com"
        detail = f"'{email}' is not a valid email address."
        pointer = "/data/attributes/profiles/data/0/attributes/email"
        return api_json(400, error_document(400, "invalid", "Invalid input.", detail, pointer=pointer))
    return None


def _first_email(raw_body: bytes) -> str | None:
    try:
        document = json.loads(raw_body)
    except ValueError:
        return None
    stack = [document]
    while stack:
        node = stack.pop(0)
        if isinstance(node, dict):
            if isinstance(node.get("email"), str):
                return str(node["email"])
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return None


def _truncate(response: Response, rule: FaultRule) -> Response:
    body = bytes(response.body) or b'{"data":{"type":"x"}}'
    cut = body[: max(1, len(body) // 2)]
    headers = {
        k: v for k, v in response.headers.items() if k.lower() not in ("content-length", "content-type")
    }
    status = rule.status or (200 if response.status_code == 204 else response.status_code)
    return Response(cut, status_code=status, media_type=JSON_API, headers=headers)
