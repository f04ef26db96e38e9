"""A connection's ``verify`` extra naming a private CA, as a PEM bundle or as a hashed folder, is trusted by the
push's requests and by the triggerer's job polls alike; anything else is refused before a call is made."""

from __future__ import annotations

import asyncio
import ssl
import subprocess
from pathlib import Path

import pytest
import trustme

from airflow_provider_klaviyo_nosto.exceptions import KlaviyoConfigError, NostoConfigError
from airflow_provider_klaviyo_nosto.hooks.nosto import NostoHook
from tests.unit.hooks.klaviyo_fixtures import (
    NOSTO_TOKEN,
    FakeClock,
    ScriptedServer,
    make_hook,
    set_connection,
    set_nosto_connection,
)

JOB = {
    "data": {
        "type": "profile-bulk-import-job",
        "id": "JOB1",
        "attributes": {"status": "complete", "total_count": 3, "completed_count": 3, "failed_count": 0},
    }
}


@pytest.fixture
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def server_context(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    return context


def pem_bundle(ca: trustme.CA, folder: Path) -> str:
    path = folder / "private-ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return str(path)


def hashed_folder(ca: trustme.CA, folder: Path) -> str:
    """A folder laid out as ``openssl rehash`` leaves it: each CA under its subject hash."""
    bundle = pem_bundle(ca, folder)
    subject_hash = subprocess.run(
        ["openssl", "x509", "-subject_hash", "-noout", "-in", bundle],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    hashed = folder / "certs"
    hashed.mkdir()
    (hashed / f"{subject_hash}.0").write_bytes(Path(bundle).read_bytes())
    return str(hashed)


async def poll_job(monkeypatch: pytest.MonkeyPatch, context: ssl.SSLContext, verify: str | None) -> tuple:
    async with ScriptedServer([(200, {}, JOB)], ssl_context=context) as server:
        set_connection(monkeypatch, host=server.url, extra={"verify": verify} if verify else {})
        hook = make_hook(FakeClock())
        polled = await hook.aget_bulk_import_job("JOB1")
        fetched = await asyncio.to_thread(hook.get_bulk_import_job, "JOB1")
    return polled.status.value, fetched.status.value


@pytest.mark.parametrize("layout", [pem_bundle, hashed_folder], ids=["pem-bundle", "hashed-folder"])
def test_a_private_ca_is_trusted_by_the_push_and_by_the_triggerer(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, ca: trustme.CA, server_context: ssl.SSLContext, layout
) -> None:
    verify = layout(ca, tmp_path)

    assert asyncio.run(poll_job(monkeypatch, server_context, verify)) == ("complete", "complete")


@pytest.mark.parametrize("path", ["triggerer", "worker"])
def test_an_untrusted_certificate_fails_at_once_naming_the_verify_extra(
    monkeypatch: pytest.MonkeyPatch, server_context: ssl.SSLContext, path: str
) -> None:
    clock = FakeClock()

    async def poll() -> None:
        async with ScriptedServer([(200, {}, JOB)], ssl_context=server_context) as server:
            set_connection(monkeypatch, host=server.url)
            hook = make_hook(clock)
            if path == "triggerer":
                await hook.aget_bulk_import_job("JOB1")
            else:
                await asyncio.to_thread(hook.get_bulk_import_job, "JOB1")

    with pytest.raises(KlaviyoConfigError) as err:
        asyncio.run(poll())

    assert str(err.value).startswith(
        "Klaviyo GET /api/profile-bulk-import-jobs/{id}: the server's TLS certificate is not trusted ("
    )
    assert "name its CA in 'verify' in the extra of Airflow connection 'klaviyo_default'" in str(err.value)
    assert clock.sleeps == [], "a certificate that is not trusted does not become trusted by waiting"


def test_an_untrusted_certificate_on_the_nosto_connection_fails_at_once_naming_it(
    monkeypatch: pytest.MonkeyPatch, server_context: ssl.SSLContext
) -> None:
    async def catalogue() -> None:
        async with ScriptedServer([(200, {}, {"data": {}})], ssl_context=server_context) as server:
            set_nosto_connection(monkeypatch, host=server.url)
            await asyncio.to_thread(NostoHook().get_segments)

    with pytest.raises(NostoConfigError) as err:
        asyncio.run(catalogue())

    assert str(err.value).startswith("Nosto POST /v1/graphql: the server's TLS certificate is not trusted (")
    assert "'verify' in the extra of Airflow connection 'nosto_default'" in str(err.value)
    assert NOSTO_TOKEN not in str(err.value)


@pytest.mark.parametrize("content", [b"", b"<html>not a certificate</html>"], ids=["empty", "not-pem"])
def test_a_verify_file_holding_no_certificate_is_a_config_error_naming_the_extra(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, content: bytes
) -> None:
    path = tmp_path / "ca.pem"
    path.write_bytes(content)
    set_connection(monkeypatch, extra={"verify": str(path)})

    with pytest.raises(KlaviyoConfigError) as err:
        make_hook(FakeClock()).get_conn()

    assert str(err.value).startswith(
        f"Connection 'klaviyo_default': extra 'verify' names {str(path)!r}, which holds no CA certificate"
    )


@pytest.mark.parametrize("rehashed", [False, True], ids=["never-rehashed", "empty"])
def test_a_ca_folder_holding_no_hashed_certificate_is_a_config_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, ca: trustme.CA, rehashed: bool
) -> None:
    # A folder is only read during a handshake, so an unprepared one would fail every call instead.
    folder = tmp_path / "certs"
    folder.mkdir()
    if not rehashed:
        pem_bundle(ca, folder)
    set_connection(monkeypatch, extra={"verify": str(folder)})

    with pytest.raises(KlaviyoConfigError, match="which holds no CA certificate.*'openssl rehash'"):
        make_hook(FakeClock()).get_conn()


def test_a_relative_verify_path_is_a_config_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, ca: trustme.CA
) -> None:
    pem_bundle(ca, tmp_path)
    monkeypatch.chdir(tmp_path)  # the file exists relative to this process only
    set_connection(monkeypatch, extra={"verify_ssl": "private-ca.pem"})

    with pytest.raises(KlaviyoConfigError) as err:
        make_hook(FakeClock()).get_conn()

    assert str(err.value).startswith(
        "Connection 'klaviyo_default': extra 'verify_ssl' must be an absolute path (it is 'private-ca.pem')"
    )
