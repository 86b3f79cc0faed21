"""Callback delivery over real sockets: DNS rebinding and TLS through the pinned transport.

The sender runs in-process with an injected resolver (the report service in the stack
uses the OS resolver, which a test cannot make rebind); the receivers are local HTTP(S)
servers (`tests/receivers.py`).
"""

from __future__ import annotations

import shutil
import ssl
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from receivers import Receiver

from services.report.callbacks import CallbackSender, CallbackSettings
from shared.callback_signing import verify_signature

SECRET = b"tenant-secret"


def _row(url: str) -> dict[str, Any]:
    return {
        "id": "job-1:completed",
        "job_id": "job-1",
        "url": url,
        "payload": {"event": "job.completed", "job_id": "job-1", "status": "completed"},
        "attempts": 0,
        "next_attempt_at": datetime.now(UTC),
        "delivered_at": None,
        "last_error": None,
        "tenant_id": "t1",
    }


def _twin_receivers() -> tuple[Receiver, Receiver]:
    """Two receivers on the same port: 127.0.0.2 (the vetted one) and 127.0.0.1."""
    for _ in range(20):
        vetted = Receiver("ok", host="127.0.0.2")
        try:
            internal = Receiver("ok", host="127.0.0.1", port=vetted.port)
        except OSError:  # that port is taken on 127.0.0.1: try another
            vetted.close()
            continue
        return vetted, internal
    raise RuntimeError("no port free on both 127.0.0.1 and 127.0.0.2")


async def test_dns_answer_changing_between_check_and_connect_is_not_used() -> None:
    vetted, internal = _twin_receivers()
    answers: list[str] = []

    async def rebinding(host: str, port: int) -> list[str]:
        # First answer: an allowed address. Every later one: the internal service.
        answer = "127.0.0.2" if not answers else "127.0.0.1"
        answers.append(answer)
        return [answer]

    # `localhost` also resolves to 127.0.0.1 through the OS: a client that looks the name
    # up again on connect lands on the internal receiver.
    url = f"http://localhost:{vetted.port}/hook"
    settings = CallbackSettings(allow_hosts="127.0.0.2", allow_ports=str(vetted.port))
    sender = CallbackSender(settings, resolver=rebinding)
    try:
        (row,) = await sender.deliver_group([_row(url)], [SECRET])
    finally:
        await sender.close()
        vetted.close()
        internal.close()
    assert internal.received == [], "the connection went to the rebound address"
    assert answers == ["127.0.0.2"], "the host was resolved more than once"
    assert row["delivered_at"] is not None, row
    (request,) = vetted.received
    assert request.headers["host"] == f"localhost:{vetted.port}"
    assert verify_signature(
        SECRET, request.headers["x-voc-timestamp"], request.body, request.headers["x-voc-signature"]
    )


# -- TLS: SNI and certificate verification are for the host name --------------------------------


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Path]]:
    """A throwaway CA and server certificates for `hooks.test` and `other.test`."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is not installed")
    d = tmp_path_factory.mktemp("pki")

    def run(*args: str) -> None:
        subprocess.run([openssl, *args], cwd=d, check=True, capture_output=True)

    run(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "1",
        "-subj",
        "/CN=voc test CA",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
    )
    for name in ("hooks.test", "other.test"):
        (d / f"{name}.ext").write_text(f"subjectAltName=DNS:{name}\n")
        run(
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            f"/CN={name}",
            "-keyout",
            f"{name}.key",
            "-out",
            f"{name}.csr",
        )
        run(
            "x509",
            "-req",
            "-in",
            f"{name}.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "1",
            "-extfile",
            f"{name}.ext",
            "-out",
            f"{name}.pem",
        )
    yield {
        "ca": d / "ca.pem",
        "hooks.test": d / "hooks.test.pem",
        "hooks.test.key": d / "hooks.test.key",
        "other.test": d / "other.test.pem",
        "other.test.key": d / "other.test.key",
    }


def _server_context(pki: dict[str, Path], name: str) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(pki[name], pki[f"{name}.key"])
    return ctx


async def _deliver_tls(pki: dict[str, Path], receiver: Receiver) -> dict[str, Any]:
    async def resolve(host: str, port: int) -> list[str]:
        assert host == "hooks.test"
        return ["127.0.0.1"]

    client_ctx = ssl.create_default_context(cafile=str(pki["ca"]))
    sender = CallbackSender(
        CallbackSettings(allow_hosts="hooks.test"), resolver=resolve, ssl_context=client_ctx
    )
    try:
        (row,) = await sender.deliver_group(
            [_row(f"https://hooks.test:{receiver.port}/hook")], [SECRET]
        )
    finally:
        await sender.close()
    return row


async def test_pinned_tls_keeps_the_host_name_for_sni_and_verification(
    pki: dict[str, Path],
) -> None:
    receiver = Receiver("ok", tls=_server_context(pki, "hooks.test"))
    try:
        row = await _deliver_tls(pki, receiver)
    finally:
        receiver.close()
    assert row["delivered_at"] is not None, row
    assert receiver.server_names == ["hooks.test"]
    assert receiver.received[0].headers["host"] == f"hooks.test:{receiver.port}"


async def test_pinned_tls_refuses_a_certificate_for_another_name(pki: dict[str, Path]) -> None:
    receiver = Receiver("ok", tls=_server_context(pki, "other.test"))
    try:
        row = await _deliver_tls(pki, receiver)
    finally:
        receiver.close()
    assert row["delivered_at"] is None
    assert "CERTIFICATE_VERIFY_FAILED" in row["last_error"], row
    assert receiver.received == []
