"""Fixtures for every suite."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.klaviyo_contract import assert_all_allowed


@pytest.fixture
def requests_mock(requests_mock: Any) -> Iterator[Any]:
    """requests-mock's fixture, with every Klaviyo request the test sent checked against the schema."""
    yield requests_mock
    assert_all_allowed(
        (request.method, request.url, request.headers, request.body)
        for request in requests_mock.request_history
    )
