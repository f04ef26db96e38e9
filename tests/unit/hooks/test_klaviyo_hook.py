from __future__ import annotations

import json
import logging
import re
from urllib.parse import parse_qs, urlsplit

import certifi
import pytest
import requests
from airflow.providers.common.compat.sdk import AirflowFailException

from airflow_provider_klaviyo_nosto.exceptions import (
    KlaviyoAuthError,
    KlaviyoClientError,
    KlaviyoConfigError,
    KlaviyoError,
    KlaviyoPaginationError,
    KlaviyoPermissionError,
    KlaviyoRateLimitError,
    KlaviyoServerError,
)
from airflow_provider_klaviyo_nosto.hooks.klaviyo import (
    BulkImportJobStatus,
    KlaviyoHook,
)
from airflow_provider_klaviyo_nosto.hooks.retry import is_retryable
from tests.unit.hooks.klaviyo_fixtures import API_KEY, BASE, FakeClock, make_hook, set_connection

JOBS = f"{BASE}/api/profile-bulk-import-jobs"
PROFILES = [{"type": "profile", "attributes": {"email": f"user{i}@example.com"}} for i in range(4)]
ACCEPTED = {"status_code": 202, "json": {"data": {"type": "profile-bulk-import-job", "id": "JOB1"}}}


def _query(request) -> dict[str, list[str]]:
    return parse_qs(urlsplit(request.url).query)


def _error(status: int, code: str = "invalid", detail: str = "bad", pointer: str | None = None) -> dict:
    error: dict = {"id": "e1", "status": status, "code": code, "title": "t", "detail": detail}
    if pointer:
        error["source"] = {"pointer": pointer}
    return {"errors": [error]}


class TestConnectionSettings:
    """B18: extras are options read by name, never headers."""

    EXTRA = {
        "timeout": 30,
        "proxies": {"https": "http://proxy.example.com:3128"},
        "all_contacts_list_name": "All Nosto contacts",
    }

    def test_exact_headers_and_requests_options(self, monkeypatch, clock, requests_mock):
        set_connection(monkeypatch, extra=self.EXTRA)
        requests_mock.get(f"{BASE}/api/accounts", json={"data": [{"id": "ACC1"}]})

        ok, message = make_hook(clock).test_connection()

        assert ok, message
        sent = requests_mock.request_history[0]
        assert {k.lower(): v for k, v in sent.headers.items()} == {
            "authorization": f"Klaviyo-API-Key {API_KEY}",
            "revision": KlaviyoHook.REVISION,
            "accept": "application/vnd.api+json",
            "content-type": "application/vnd.api+json",
            "user-agent": sent.headers["User-Agent"],
        }
        assert sent.headers["User-Agent"].startswith("airflow-provider-klaviyo-nosto/")
        assert sent.timeout == (30.0, 30.0)
        assert sent.proxies["https"] == "http://proxy.example.com:3128"

    def test_default_timeout_and_base_url(self, hook, requests_mock):
        requests_mock.get(f"{BASE}/api/accounts", json={"data": []})
        hook.request("GET", "/api/accounts")
        assert requests_mock.request_history[0].timeout == (10.0, 60.0)

    def test_invalid_extra_names_connection_not_key(self, monkeypatch, clock, caplog):
        set_connection(monkeypatch, extra="not json")
        with pytest.raises(KlaviyoConfigError, match="klaviyo_default") as err:
            make_hook(clock).get_conn()
        assert API_KEY not in str(err.value)
        ok, message = make_hook(clock).test_connection()
        assert not ok
        assert "valid JSON" in message
        assert "klaviyo_default" in message
        assert API_KEY not in message
        assert API_KEY not in caplog.text

    def test_conflicting_revision_names_both(self, monkeypatch, clock):
        set_connection(monkeypatch, extra={**self.EXTRA, "revision": "2024-10-15"})
        with pytest.raises(KlaviyoConfigError) as err:
            make_hook(clock).get_conn()
        assert "2024-10-15" in str(err.value)
        assert KlaviyoHook.REVISION in str(err.value)

    def test_same_revision_is_accepted(self, monkeypatch, clock):
        set_connection(monkeypatch, extra={"revision": KlaviyoHook.REVISION})
        assert make_hook(clock).get_conn().headers["revision"] == KlaviyoHook.REVISION

    @pytest.mark.parametrize(
        ("host", "expected"),
        [
            ("", "https://a.klaviyo.com"),
            ("a.klaviyo.com", "https://a.klaviyo.com"),
            ("https://eu.example.com/", "https://eu.example.com"),
            ("http://127.0.0.1:8025", "http://127.0.0.1:8025"),
            ("http://localhost:8025", "http://localhost:8025"),
        ],
    )
    def test_base_url(self, monkeypatch, clock, host, expected):
        set_connection(monkeypatch, host=host)
        assert make_hook(clock).settings.base_url == expected

    def test_plain_http_refused_for_remote_host(self, monkeypatch, clock):
        set_connection(monkeypatch, host="http://a.klaviyo.com")
        with pytest.raises(KlaviyoConfigError, match="loopback"):
            make_hook(clock).get_conn()

    @pytest.mark.parametrize(
        "extra",
        [
            {"verify": False},
            {"verify": "false"},
            {"verify": "0"},
            {"verify_ssl": False},
            {"ssl_verify": "no"},
            {"insecure": True},
            {"verify": True, "verify_ssl": "off"},
        ],
        ids=["bool", "string", "zero", "verify_ssl", "ssl_verify", "insecure", "mixed"],
    )
    def test_verify_off_refused_for_remote_host(self, monkeypatch, clock, extra):
        set_connection(monkeypatch, extra=extra)
        with pytest.raises(KlaviyoConfigError, match="verification cannot be switched off for a.klaviyo.com"):
            make_hook(clock).get_conn()

    @pytest.mark.parametrize(
        ("host", "extra", "verify"),
        [
            ("http://127.0.0.1:8025", {"verify": False}, False),
            ("http://[::1]:8025", {"verify": "false"}, False),
            ("http://localhost:8025", {"insecure": True}, False),
            ("", {}, True),
            # A CA bundle that exists wherever requests is installed.
            ("", {"verify": certifi.where()}, certifi.where()),
        ],
    )
    def test_verify_setting_reaches_requests(self, monkeypatch, clock, requests_mock, host, extra, verify):
        set_connection(monkeypatch, host=host, extra=extra)
        hook = make_hook(clock)
        requests_mock.get(f"{hook.settings.base_url}/api/accounts", json={"data": []})
        hook.request("GET", "/api/accounts")
        sent = requests_mock.request_history[0].verify
        if verify is True:
            # requests may swap True for the CA bundle named by REQUESTS_CA_BUNDLE: still verified.
            assert sent is True or (isinstance(sent, str) and sent)
        else:
            assert sent == verify

    def test_plain_http_refused_for_a_host_that_only_looks_local(self, monkeypatch, clock):
        set_connection(monkeypatch, host="http://127.0.0.1.example.com")
        with pytest.raises(KlaviyoConfigError, match="loopback"):
            make_hook(clock).get_conn()

    def test_missing_key(self, monkeypatch, clock):
        monkeypatch.setenv("AIRFLOW_CONN_KLAVIYO_DEFAULT", json.dumps({"conn_type": "klaviyo"}))
        with pytest.raises(KlaviyoConfigError, match="password"):
            make_hook(clock).get_conn()


class TestRateLimits:
    """B01."""

    def test_retry_after_is_a_floor(self, hook, clock, requests_mock):
        sent_at = []

        def answer(status, headers=None, body=None):
            def callback(request, context):
                sent_at.append(clock())
                context.status_code = status
                context.headers.update(headers or {})
                return body

            return {"json": callback}

        requests_mock.post(
            JOBS,
            [
                answer(429, {"Retry-After": "2"}, _error(429, "throttled")),
                answer(202, body=ACCEPTED["json"]),
            ],
        )

        submission = hook.submit_bulk_import(PROFILES, "L1")

        assert submission.job_id == "JOB1"
        assert requests_mock.call_count == 2
        assert sent_at[1] - sent_at[0] >= 2

    def test_huge_retry_after_fails_at_once(self, hook, clock, requests_mock):
        requests_mock.post(
            JOBS, status_code=429, headers={"Retry-After": "86400"}, json=_error(429, "throttled")
        )

        with pytest.raises(KlaviyoRateLimitError, match="86400") as err:
            hook.submit_bulk_import(PROFILES, "L1")

        assert err.value.retry_after == 86400
        assert requests_mock.call_count == 1
        assert all(pause <= 60 for pause in clock.sleeps)

    def test_throttled_without_retry_after_backs_off_then_gives_up(self, hook, clock, requests_mock):
        requests_mock.post(JOBS, status_code=429, json=_error(429, "throttled"))

        with pytest.raises(KlaviyoRateLimitError):
            hook.submit_bulk_import(PROFILES, "L1")

        assert requests_mock.call_count == 6
        assert hook.throttled == 6
        backoffs = [pause for pause in clock.sleeps if pause >= 1]
        assert len(backoffs) == 5
        assert backoffs == sorted(backoffs)
        assert max(backoffs) <= 45


class TestRetryDecision:
    """B02: the predicate is checked against the exceptions the hook really raises."""

    REL = f"{BASE}/api/lists/L1/relationships/profiles"

    def test_server_errors_are_retried(self, hook, requests_mock):
        requests_mock.get(
            self.REL,
            [
                {"status_code": 503, "json": _error(503, "unavailable")},
                {"status_code": 503, "text": "<html>busy</html>"},
                {"json": {"data": [{"type": "profile", "id": "P1"}], "links": {"next": None}}},
            ],
        )
        assert list(hook.iter_list_profile_ids("L1")) == ["P1"]
        assert requests_mock.call_count == 3
        assert hook.calls_made == 3

    def test_bad_request_is_terminal_and_carries_pointer(self, hook, requests_mock):
        pointer = "/data/attributes/profiles/data/1/attributes/email"
        requests_mock.post(self.REL, status_code=400, json=_error(400, pointer=pointer))

        with pytest.raises(KlaviyoClientError) as err:
            hook.add_profiles_to_list("L1", ["P1", "P2"])

        assert requests_mock.call_count == 1
        assert err.value.pointers == [pointer]
        assert not is_retryable(err.value, idempotent=True)
        # Nor does Airflow retry the task: the same request gets the same answer.
        assert isinstance(err.value, AirflowFailException)

    def test_unauthorized_is_terminal(self, hook, requests_mock):
        requests_mock.get(self.REL, status_code=401, json=_error(401, "not_authenticated"))

        with pytest.raises(KlaviyoAuthError, match="private API key.*klaviyo_default") as err:
            list(hook.iter_list_profile_ids("L1"))

        assert requests_mock.call_count == 1
        assert not is_retryable(err.value)
        assert isinstance(err.value, AirflowFailException)

    def test_forbidden_names_scopes(self, hook, requests_mock):
        requests_mock.post(f"{BASE}/api/lists", status_code=403, json=_error(403, "permission_denied"))
        with pytest.raises(KlaviyoPermissionError, match="lists:write") as err:
            hook.create_list("Nosto Customers")
        assert "klaviyo_default" in str(err.value)
        assert requests_mock.call_count == 1
        assert isinstance(err.value, AirflowFailException)

    def test_server_errors_leave_airflow_retries_to_do_their_work(self, hook, requests_mock):
        requests_mock.get(self.REL, status_code=500, json=_error(500, "error"))
        with pytest.raises(KlaviyoServerError, match="Retry the task") as err:
            list(hook.iter_list_profile_ids("L1"))
        assert not isinstance(err.value, AirflowFailException)

    def test_cloudflare_challenge_is_retried(self, hook, requests_mock):
        requests_mock.get(
            self.REL,
            [
                {
                    "status_code": 403,
                    "text": "<html>challenge</html>",
                    "headers": {"cf-mitigated": "challenge"},
                },
                {"json": {"data": [], "links": {}}},
            ],
        )
        assert list(hook.iter_list_profile_ids("L1")) == []
        assert requests_mock.call_count == 2

    def test_html_403_without_challenge_is_terminal(self, hook, requests_mock):
        requests_mock.get(self.REL, status_code=403, text="<html>denied</html>")
        with pytest.raises(KlaviyoClientError, match="non-JSON"):
            list(hook.iter_list_profile_ids("L1"))
        assert requests_mock.call_count == 1

    @pytest.mark.parametrize("status", [503, 500, 502, 504, 429])
    def test_predicate_on_real_exceptions(self, monkeypatch, clock, requests_mock, status):
        set_connection(monkeypatch)
        single = make_hook(clock, max_attempts=1)
        requests_mock.get(self.REL, status_code=status, json=_error(status))
        requests_mock.post(JOBS, status_code=status, json=_error(status))

        with pytest.raises(KlaviyoError) as read_err:
            list(single.iter_list_profile_ids("L1"))
        with pytest.raises(KlaviyoError) as create_err:
            single.submit_bulk_import(PROFILES, None)

        assert is_retryable(read_err.value, idempotent=True)
        # Only a server that says it did not act may see a create repeated.
        assert is_retryable(create_err.value, idempotent=False) is (status in (429, 503))

    def test_read_timeout_retried_for_reads_only(self, hook, requests_mock):
        requests_mock.get(self.REL, [{"exc": requests.ReadTimeout}, {"json": {"data": []}}])
        assert list(hook.iter_list_profile_ids("L1")) == []
        assert requests_mock.call_count == 2

        requests_mock.post(JOBS, exc=requests.ReadTimeout)
        with pytest.raises(KlaviyoServerError, match="ReadTimeout"):
            hook.submit_bulk_import(PROFILES, "L1")
        assert requests_mock.request_history[-1].method == "POST"
        assert sum(r.method == "POST" for r in requests_mock.request_history) == 1

    def test_connect_failure_retried_even_for_creates(self, hook, requests_mock):
        requests_mock.post(JOBS, [{"exc": requests.ConnectTimeout}, ACCEPTED])
        assert hook.submit_bulk_import(PROFILES, "L1").job_id == "JOB1"


class TestBulkImport:
    def test_body_with_and_without_list(self, hook, requests_mock):
        requests_mock.post(JOBS, **ACCEPTED)
        hook.submit_bulk_import(PROFILES[:1], "L1")
        hook.submit_bulk_import(PROFILES[:1], None)

        with_list, without_list = (r.json() for r in requests_mock.request_history)
        assert with_list == {
            "data": {
                "type": "profile-bulk-import-job",
                "attributes": {"profiles": {"data": PROFILES[:1]}},
                "relationships": {"lists": {"data": [{"type": "list", "id": "L1"}]}},
            }
        }
        assert "relationships" not in without_list["data"]

    def test_rejected_profiles_are_stripped_and_resent_once(self, hook, requests_mock):
        """B03: the pointer names profile 1; the other three go through in one resend."""
        detail = "'user1@example.com' is not a valid email address."
        requests_mock.post(
            JOBS,
            [
                {
                    "status_code": 400,
                    "json": _error(
                        400, detail=detail, pointer="/data/attributes/profiles/data/1/attributes/email"
                    ),
                },
                ACCEPTED,
            ],
        )

        submission = hook.submit_bulk_import(PROFILES, "L1")

        assert submission.job_id == "JOB1"
        assert list(submission.rejected) == [1]
        assert "user1@example.com" not in submission.rejected[1]
        assert "valid email" in submission.rejected[1]
        resent = requests_mock.request_history[1].json()["data"]["attributes"]["profiles"]["data"]
        assert resent == [PROFILES[0], PROFILES[2], PROFILES[3]]

    def test_a_second_refusal_strips_that_profile_too_with_original_indexes(self, hook, requests_mock):
        # Klaviyo may name one bad profile per refusal; two bad addresses must not block the batch.
        requests_mock.post(
            JOBS,
            [
                {
                    "status_code": 400,
                    "json": _error(400, pointer="/data/attributes/profiles/data/1/attributes/email"),
                },
                {
                    "status_code": 400,
                    "json": _error(400, pointer="/data/attributes/profiles/data/1/attributes/email"),
                },
                {"status_code": 202, "json": {"data": {"type": "profile-bulk-import-job", "id": "JOB9"}}},
            ],
        )

        submission = hook.submit_bulk_import(PROFILES, "L1")

        assert requests_mock.call_count == 3
        assert submission.job_id == "JOB9"
        assert sorted(submission.rejected) == [1, 2]
        resent = requests_mock.request_history[2].json()["data"]["attributes"]["profiles"]["data"]
        assert resent == [PROFILES[0], PROFILES[3]]

    def test_refusal_rounds_are_bounded(self, hook, requests_mock):
        many = [{"type": "profile", "attributes": {"email": f"user{n}@example.com"}} for n in range(50)]
        requests_mock.post(
            JOBS,
            status_code=400,
            json=_error(400, pointer="/data/attributes/profiles/data/0/attributes/email"),
        )

        with pytest.raises(KlaviyoClientError, match="refused the bulk import again") as err:
            hook.submit_bulk_import(many, "L1")

        assert requests_mock.call_count == KlaviyoHook.MAX_REFUSAL_ROUNDS + 1
        assert err.value.pointers == [
            f"/data/attributes/profiles/data/{KlaviyoHook.MAX_REFUSAL_ROUNDS}/attributes/email"
        ]

    def test_unattributable_400_fails_whole_batch(self, hook, requests_mock):
        requests_mock.post(
            JOBS, status_code=400, json=_error(400, pointer="/data/relationships/lists/data/0/id")
        )
        with pytest.raises(KlaviyoClientError):
            hook.submit_bulk_import(PROFILES, "BAD")
        assert requests_mock.call_count == 1

    def test_all_rejected_gives_no_job(self, hook, requests_mock):
        requests_mock.post(
            JOBS,
            status_code=400,
            json=_error(400, pointer="/data/attributes/profiles/data/0/attributes/email"),
        )
        submission = hook.submit_bulk_import(PROFILES[:1], "L1")
        assert submission.job_id is None
        assert list(submission.rejected) == [0]
        assert requests_mock.call_count == 1


class TestBulkImportJobs:
    """B04."""

    def test_status_enum_is_exact(self):
        assert {s.value for s in BulkImportJobStatus} == {"queued", "processing", "complete", "cancelled"}
        assert [s.is_terminal for s in BulkImportJobStatus] == [False, False, True, True]

    def test_job_counts(self, hook, requests_mock):
        requests_mock.get(
            f"{JOBS}/JOB1",
            json={
                "data": {
                    "type": "profile-bulk-import-job",
                    "id": "JOB1",
                    "attributes": {
                        "status": "complete",
                        "total_count": 3,
                        "completed_count": 2,
                        "failed_count": 1,
                    },
                }
            },
        )
        job = hook.get_bulk_import_job("JOB1")
        assert job.to_dict() == {
            "id": "JOB1",
            "status": "complete",
            "total_count": 3,
            "completed_count": 2,
            "failed_count": 1,
        }

    def test_unknown_status_is_an_error(self, hook, requests_mock):
        requests_mock.get(f"{JOBS}/JOB1", json={"data": {"id": "JOB1", "attributes": {"status": "failed"}}})
        with pytest.raises(KlaviyoError, match="failed"):
            hook.get_bulk_import_job("JOB1")

    @pytest.mark.parametrize("job_id", ["", "  "])
    def test_empty_job_id_never_polled(self, hook, requests_mock, job_id):
        with pytest.raises(ValueError, match="job id"):
            hook.get_bulk_import_job(job_id)
        with pytest.raises(ValueError, match="job id"):
            list(hook.iter_bulk_import_errors(job_id))
        assert requests_mock.call_count == 0

    def test_import_errors(self, hook, requests_mock):
        requests_mock.get(
            f"{JOBS}/JOB1/import-errors",
            json={
                "data": [
                    {
                        "type": "import-error",
                        "id": "E1",
                        "attributes": {
                            "code": "invalid",
                            "title": "Invalid input.",
                            "detail": "bob@example.com is not a valid email",
                            "source": {"pointer": "/data/attributes/email"},
                            "original_payload": {
                                "type": "profile",
                                "attributes": {"email": "bob@example.com"},
                            },
                        },
                    }
                ],
                "links": {"next": None},
            },
        )
        (error,) = hook.iter_bulk_import_errors("JOB1")
        assert error.email == "bob@example.com"
        assert error.code == "invalid"
        assert "bob@example.com" not in error.detail
        assert requests_mock.request_history[0].qs["page[size]"] == ["100"]


class TestDuplicateProfile:
    """B08."""

    def test_409_returns_existing_id(self, hook, requests_mock):
        requests_mock.post(
            f"{BASE}/api/profiles",
            status_code=409,
            json={
                "errors": [
                    {
                        "id": "x",
                        "status": 409,
                        "code": "duplicate_profile",
                        "title": "Conflict.",
                        "detail": "A profile already exists with one of these identifiers.",
                        "meta": {"duplicate_profile_id": "01HEXAMPLEDANA"},
                    }
                ]
            },
        )
        assert hook.resolve_duplicate_profile("dana@example.com") == "01HEXAMPLEDANA"
        assert requests_mock.call_count == 1

    def test_409_without_id_looks_up_by_email(self, hook, requests_mock):
        requests_mock.post(
            f"{BASE}/api/profiles",
            status_code=409,
            json={"errors": [{"status": 409, "code": "duplicate_profile", "meta": {}}]},
        )
        requests_mock.get(
            f"{BASE}/api/profiles",
            json={
                "data": [
                    {"type": "profile", "id": "01HEXAMPLEDANA", "attributes": {"email": "dana@example.com"}}
                ]
            },
        )
        assert hook.resolve_duplicate_profile("dana@example.com") == "01HEXAMPLEDANA"
        posts = [r for r in requests_mock.request_history if r.method == "POST"]
        assert len(posts) == 1
        lookup = requests_mock.request_history[-1]
        assert _query(lookup)["filter"] == ['any(email,["dana@example.com"])']

    def test_created(self, hook, requests_mock):
        requests_mock.post(
            f"{BASE}/api/profiles", status_code=201, json={"data": {"type": "profile", "id": "NEW"}}
        )
        assert hook.resolve_duplicate_profile("new@example.com") == "NEW"


class TestPagination:
    """B12."""

    REL = f"{BASE}/api/lists/L1/relationships/profiles"

    @staticmethod
    def _page(ids, next_url):
        return {"json": {"data": [{"type": "profile", "id": i} for i in ids], "links": {"next": next_url}}}

    def test_follows_next_verbatim(self, hook, requests_mock):
        page2 = f"{self.REL}/?page%5Bcursor%5D=c2"
        page3 = f"{self.REL}/?page%5Bcursor%5D=c3"
        requests_mock.get(
            re.compile(re.escape(self.REL) + "/?"),
            [self._page(["P1"], page2), self._page(["P2"], page3), self._page(["P3"], None)],
        )

        assert list(hook.iter_list_profile_ids("L1")) == ["P1", "P2", "P3"]

        urls = [r.url for r in requests_mock.request_history]
        assert urls[0] == f"{self.REL}?page%5Bsize%5D=100"
        assert urls[1:] == [page2, page3]

    def test_repeated_cursor_stops(self, hook, requests_mock):
        page2 = f"{self.REL}?page%5Bcursor%5D=c2"
        requests_mock.get(self.REL, [self._page(["P1"], page2), self._page(["P2"], page2)])
        with pytest.raises(KlaviyoPaginationError, match="repeated"):
            list(hook.iter_list_profile_ids("L1"))
        assert requests_mock.call_count == 2

    def test_cycle_a_b_a_stops(self, hook, requests_mock):
        a = f"{self.REL}?page%5Bcursor%5D=a"
        b = f"{self.REL}?page%5Bcursor%5D=b"
        requests_mock.get(self.REL, [self._page(["P1"], a), self._page(["P2"], b), self._page(["P3"], a)])
        with pytest.raises(KlaviyoPaginationError):
            list(hook.iter_list_profile_ids("L1"))
        assert requests_mock.call_count == 3

    def test_next_on_other_host_is_refused(self, hook, requests_mock):
        requests_mock.get(self.REL, **self._page(["P1"], "https://evil.example.com/api?page%5Bcursor%5D=x"))
        with pytest.raises(KlaviyoPaginationError, match="another host"):
            list(hook.iter_list_profile_ids("L1"))

    def test_list_lookup_uses_page_size_10(self, hook, requests_mock):
        requests_mock.get(
            f"{BASE}/api/lists",
            json={"data": [{"type": "list", "id": "L9", "attributes": {"name": "Nosto Customers"}}]},
        )
        assert hook.find_list_by_name("Nosto Customers") == "L9"
        sent = requests_mock.request_history[0]
        assert sent.qs["page[size]"] == ["10"]
        assert _query(sent)["filter"] == ['equals(name,"Nosto Customers")']

    def test_two_lists_with_one_name_is_a_conflict(self, hook, requests_mock):
        items = [{"type": "list", "id": i, "attributes": {"name": "Dup"}} for i in ("L1", "L2")]
        requests_mock.get(f"{BASE}/api/lists", json={"data": items})
        with pytest.raises(KlaviyoError, match=r"2 Klaviyo lists are named 'Dup' \(ids L1, L2\)") as err:
            hook.find_list_by_name("Dup")
        assert "Rename or delete the others in Klaviyo" in str(err.value)

    def test_oversize_page_refused_before_sending(self, hook, requests_mock):
        with pytest.raises(ValueError, match="between 1 and 10"):
            list(hook.paginate("/api/lists", {"page[size]": 100}))
        with pytest.raises(ValueError, match="between 1 and 100"):
            list(hook.paginate("/api/profiles", {"page[size]": 101}))
        assert requests_mock.call_count == 0


class TestListsAndProfiles:
    def test_get_list_404_is_none(self, hook, requests_mock):
        requests_mock.get(f"{BASE}/api/lists/GONE", status_code=404, json=_error(404, "not_found"))
        assert hook.get_list("GONE") is None

    def test_create_list_not_retried_on_gateway_error(self, hook, requests_mock):
        requests_mock.post(f"{BASE}/api/lists", status_code=502, text="bad gateway")
        with pytest.raises(KlaviyoServerError):
            hook.create_list("Nosto Customers")
        assert requests_mock.call_count == 1

    def test_membership_chunks_of_1000_are_retried(self, hook, requests_mock):
        url = f"{BASE}/api/lists/L1/relationships/profiles"
        requests_mock.post(url, [{"status_code": 504, "text": ""}] + [{"status_code": 204}] * 3)
        hook.add_profiles_to_list("L1", [f"P{i}" for i in range(2500)])
        sizes = [len(r.json()["data"]) for r in requests_mock.request_history]
        assert sizes == [1000, 1000, 1000, 500]

        requests_mock.delete(url, status_code=204)
        hook.remove_profiles_from_list("L1", ["P1"])
        assert requests_mock.request_history[-1].json() == {"data": [{"type": "profile", "id": "P1"}]}

    def test_profile_ids_by_email_in_chunks_of_100(self, hook, requests_mock):
        def answer(request, context):
            emails = json.loads(_query(request)["filter"][0][len("any(email,") : -1])
            return {
                "data": [{"type": "profile", "id": f"id-{e}", "attributes": {"email": e}} for e in emails[:2]]
            }

        requests_mock.get(f"{BASE}/api/profiles", json=answer)
        emails = [f"user{i}@example.com" for i in range(150)]

        found = hook.get_profile_ids_by_email(emails)

        assert requests_mock.call_count == 2
        assert found["user0@example.com"] == "id-user0@example.com"
        assert len(found) == 4
        assert all(r.qs["fields[profile]"] == ["email"] for r in requests_mock.request_history)

    def test_iter_profiles_reads_the_property(self, hook, requests_mock):
        requests_mock.get(
            f"{BASE}/api/profiles",
            json={
                "data": [
                    {
                        "id": "P1",
                        "attributes": {"email": "a@example.com", "properties": {"nosto_segment": ["VIP"]}},
                    },
                    {"id": "P2", "attributes": {"email": "b@example.com", "properties": {}}},
                ]
            },
        )
        assert list(hook.iter_profiles(["a@example.com", "b@example.com"], "nosto_segment")) == [
            ("a@example.com", "P1", ["VIP"]),
            ("b@example.com", "P2", None),
        ]

    def test_unset_property_body(self, hook, requests_mock):
        requests_mock.patch(f"{BASE}/api/profiles/P1", json={"data": {"id": "P1"}})
        hook.unset_profile_property("P1", "nosto_segment")
        assert requests_mock.request_history[0].json() == {
            "data": {
                "type": "profile",
                "id": "P1",
                "attributes": {},
                "meta": {"patch_properties": {"unset": ["nosto_segment"]}},
            }
        }

    def test_flow_triggers(self, hook, requests_mock):
        requests_mock.get(
            f"{BASE}/api/lists/L1/flow-triggers",
            json={
                "data": [{"type": "flow", "id": "F1", "attributes": {"name": "Welcome", "status": "live"}}]
            },
        )
        assert hook.get_list_flow_triggers("L1") == [{"id": "F1", "name": "Welcome", "status": "live"}]

    def test_flow_triggers_without_scope(self, hook, requests_mock):
        requests_mock.get(f"{BASE}/api/lists/L1/flow-triggers", status_code=403, json=_error(403))
        with pytest.raises(KlaviyoPermissionError, match="flows:read"):
            hook.get_list_flow_triggers("L1")


class TestNoSecretsInTexts:
    def test_email_and_key_never_in_errors_or_logs(self, hook, requests_mock, caplog, capsys):
        caplog.set_level(logging.INFO)
        detail = "'ana@example.com' and 'o%27neil%40example.com' are not valid emails"
        requests_mock.get(
            f"{BASE}/api/profiles",
            [
                {"status_code": 503, "json": _error(503, detail=detail)},
                {"status_code": 400, "json": _error(400, detail=detail, pointer="/data/attributes/email")},
            ],
        )

        with pytest.raises(KlaviyoClientError) as err:
            hook.get_profile_ids_by_email(["ana@example.com", "o'neil@example.com"])

        texts = [str(err.value), *err.value.pointers, *(str(e) for e in err.value.errors)]
        # Airflow 3 renders task and hook logs through structlog to the console (at INFO and above),
        # standard-library records through caplog.
        output = capsys.readouterr()
        texts += [output.out, output.err, *(r.getMessage() for r in caplog.records)]
        assert "retrying" in output.out + output.err
        for text in texts:
            assert "ana@example.com" not in text
            assert "neil%40example.com" not in text
            assert "o'neil@example.com" not in text
            assert API_KEY not in text

    def test_transport_error_text_is_masked(self, monkeypatch, clock, requests_mock):
        set_connection(monkeypatch)
        hook = make_hook(clock, max_attempts=2)
        requests_mock.get(
            f"{BASE}/api/profiles",
            exc=requests.ConnectionError(
                f"reset while reading {BASE}/api/profiles?filter=any(email,[%22ana%40example.com%22])"
            ),
        )
        with pytest.raises(KlaviyoServerError) as err:
            hook.get_profile_ids_by_email(["ana@example.com"])
        assert "ana%40example.com" not in str(err.value)
        assert err.value.__cause__ is None


def test_test_connection_failure_has_no_key(hook, requests_mock):
    requests_mock.get(f"{BASE}/api/accounts", status_code=401, json=_error(401, "authentication_failed"))
    ok, message = hook.test_connection()
    assert not ok
    assert "401" in message
    assert "Password field" in message
    assert API_KEY not in message


def test_test_connection_answers_a_network_fault_at_once_without_task_advice(hook, requests_mock, clock):
    requests_mock.get(f"{BASE}/api/accounts", exc=requests.ConnectionError("Connection refused"))

    ok, message = hook.test_connection()

    assert not ok
    assert message == "Klaviyo GET /api/accounts could not be completed: ConnectionError: Connection refused."
    assert clock.sleeps == []
    assert requests_mock.call_count == 1


def test_test_connection_names_the_missing_scope(hook, requests_mock):
    requests_mock.get(f"{BASE}/api/accounts", status_code=403, json=_error(403, "permission_denied"))
    ok, message = hook.test_connection()
    assert not ok
    assert "accounts:read" in message
    assert API_KEY not in message


def test_ui_field_behaviour_matches_provider_info():
    from airflow_provider_klaviyo_nosto.get_provider_info import get_provider_info

    (klaviyo,) = [c for c in get_provider_info()["connection-types"] if c["connection-type"] == "klaviyo"]
    behaviour = KlaviyoHook.get_ui_field_behaviour()
    assert behaviour["hidden_fields"] == klaviyo["ui-field-behaviour"]["hidden-fields"]
    assert behaviour["relabeling"] == klaviyo["ui-field-behaviour"]["relabeling"]


def test_pacing_applies_to_requests(monkeypatch, requests_mock):
    set_connection(monkeypatch)
    clock = FakeClock()
    hook = make_hook(clock, concurrency=5)
    requests_mock.get(f"{JOBS}/JOB1", json={"data": {"id": "JOB1", "attributes": {"status": "queued"}}})
    for _ in range(3):
        hook.get_bulk_import_job("JOB1")
    # Tier M burst 10/s split over 5 slots: the third call in the same second waits.
    assert clock.sleeps
    assert clock.sleeps[0] == pytest.approx(1.0)


def test_truncated_body_retried_for_reads_not_for_creates(hook, requests_mock):
    requests_mock.get(
        f"{JOBS}/JOB1",
        [
            {"text": '{"data": {"id": "JO'},
            {"json": {"data": {"id": "JOB1", "attributes": {"status": "queued"}}}},
        ],
    )
    assert hook.get_bulk_import_job("JOB1").status is BulkImportJobStatus.QUEUED
    assert requests_mock.call_count == 2

    requests_mock.post(JOBS, status_code=202, text='{"data": {"id": "JO')
    with pytest.raises(KlaviyoServerError, match="not a JSON document"):
        hook.submit_bulk_import(PROFILES, "L1")
    assert sum(r.method == "POST" for r in requests_mock.request_history) == 1
