"""Hostile callback receivers against the test stack's real API and report stage.

Every test creates jobs through the API with callback URLs on local receivers (127.0.0.1,
allowed by the test stack's `VOC_CALLBACK_ALLOW_HOSTS`), seals them (an empty job is
reported at once) and watches what the running report service does. Besides the hostile
receiver each test has bystanders: a job sealed with it whose receiver behaves, and a job
sealed while the hostile receiver is still misbehaving. The precise outcome is asserted
for the hostile one (its `callback_outbox` row), and for the bystanders: their report is
built, each of their events arrives exactly once, and the report process is the same one
(not crashed, not OOM-killed).
"""

from __future__ import annotations

import functools
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import psycopg
import pytest
from receivers import MIB, Receiver

from shared.auth import create_api_key_sync
from shared.callback_signing import verify_signature

EVENTS = ["job.report_ready", "job.completed"]
WAIT_S = 60.0


class Tenant:
    """A fresh tenant: its API client and the callback signing secret it was given."""

    def __init__(self, stack: Any) -> None:
        self.id = f"cbtest-{uuid.uuid4().hex[:10]}"
        key = create_api_key_sync(stack["DATABASE_URL"], self.id)
        self.api = httpx.Client(
            base_url=stack["VOC_API_URL"], headers={"Authorization": f"Bearer {key}"}, timeout=30
        )
        resp = self.api.post("/v1/callback-secret")
        assert resp.status_code == 201, resp.text
        self.secret: str = resp.json()["secret"]

    def job(self, callback_url: str) -> str:
        """A job with this callback URL, created through the API."""
        resp = self.api.post(
            "/v1/jobs",
            json={
                "product": "Callback probe",
                "target_language": "en",
                "callback_url": callback_url,
            },
        )
        assert resp.status_code == 201, resp.text
        return str(resp.json()["id"])

    def seal(self, job_id: str) -> None:
        """Seal the (empty) job: the report stage reports it on its next check."""
        assert self.api.post(f"/v1/jobs/{job_id}/seal").status_code == 200

    def report_status(self, job_id: str) -> str | None:
        """The report's status, None while there is none."""
        resp = self.api.get(f"/v1/jobs/{job_id}/report")
        return str(resp.json()["status"]) if resp.status_code == 200 else None


@pytest.fixture(scope="module")
def tenant(stack: Any) -> Iterator[Tenant]:
    t = Tenant(stack)
    yield t
    t.api.close()


@pytest.fixture(scope="module")
def report_pid(stack: Any) -> int:
    pid = stack.service_pid("report")
    if pid is None:
        pytest.skip("the test stack runs no report service")
    return int(pid)


@pytest.fixture
def receivers() -> Iterator[Callable[..., Receiver]]:
    made: list[Receiver] = []

    def make(behaviour: str, **kw: Any) -> Receiver:
        r = Receiver(behaviour, **kw)
        made.append(r)
        return r

    yield make
    for r in made:
        r.close()


def wait_for(what: str, check: Callable[[], bool], timeout: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.25)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def outbox(db: psycopg.Connection[Any], job_id: str) -> dict[str, dict[str, Any]]:
    """The job's callback_outbox rows by event status."""
    rows = db.execute(
        "SELECT id, attempts, delivered_at, last_error FROM callback_outbox WHERE job_id = %s",
        (job_id,),
    ).fetchall()
    return {
        r[0].split(":", 1)[1]: {"attempts": r[1], "delivered_at": r[2], "last_error": r[3]}
        for r in rows
    }


def reported(tenant: Tenant, job_id: str) -> bool:
    """The job's final report exists."""
    return tenant.report_status(job_id) == "completed"


def delivered(db: psycopg.Connection[Any], job_id: str) -> bool:
    """Both of the job's callbacks are delivered."""
    rows = outbox(db, job_id)
    return len(rows) == 2 and all(r["delivered_at"] for r in rows.values())


def assert_bystanders_fine(
    tenant: Tenant,
    db: psycopg.Connection[Any],
    good: Receiver,
    jobs: list[str],
    report_pid: int,
    stack: Any,
) -> None:
    """Every bystander job is reported, and each of its events arrives exactly once."""
    for job in jobs:
        wait_for(f"the report of {job}", functools.partial(reported, tenant, job))
        wait_for(f"the callbacks of {job}", functools.partial(delivered, db, job))
    # A couple more ticks: a stage that forgets what it delivered would send them again.
    time.sleep(3)
    for job in jobs:
        assert good.events_for(job) == EVENTS, (job, good.events_for(job))
    for request in good.received:
        assert verify_signature(
            tenant.secret.encode(),
            request.headers["x-voc-timestamp"],
            request.body,
            request.headers["x-voc-signature"],
        )
    assert stack.service_pid("report") == report_pid, "the report service was restarted"


def test_bad_host_label_is_refused_and_no_other_job_suffers(
    tenant: Tenant,
    db: psycopg.Connection[Any],
    receivers: Callable[..., Receiver],
    report_pid: int,
    stack: Any,
) -> None:
    good = receivers("ok")
    # A job stored before URLs were validated at creation: a 64-character label (the API
    # refuses it now), which made getaddrinfo raise UnicodeError inside the tick.
    legacy = tenant.job(good.url)
    bad_url = f"http://{'a' * 64}.example.com/hook"
    db.execute("UPDATE jobs SET callback_url = %s WHERE id = %s", (bad_url, legacy))
    bystander = tenant.job(good.url)
    tenant.seal(legacy)
    tenant.seal(bystander)
    wait_for("the refusal", lambda: all(r["last_error"] for r in outbox(db, legacy).values()))
    late = tenant.job(good.url)
    tenant.seal(late)
    assert_bystanders_fine(tenant, db, good, [bystander, late], report_pid, stack)
    assert tenant.report_status(legacy) == "completed"
    for row in outbox(db, legacy).values():
        assert row["delivered_at"] is None
        assert row["last_error"].startswith("refused: "), row
        assert "longer than 63 characters" in row["last_error"], row
    assert good.events_for(legacy) == []


def test_dripping_receiver_is_cut_at_the_deadline(
    tenant: Tenant,
    db: psycopg.Connection[Any],
    receivers: Callable[..., Receiver],
    report_pid: int,
    stack: Any,
) -> None:
    good = receivers("ok")
    drip = receivers("drip", drip_every_s=4.0, drip_for_s=90.0)
    slow = tenant.job(drip.url)
    bystander = tenant.job(good.url)
    tenant.seal(slow)
    tenant.seal(bystander)
    wait_for("the drip receiver's first request", lambda: bool(drip.received))
    # Sealed while the receiver drips: its report must not wait for the drip to end.
    late = tenant.job(good.url)
    tenant.seal(late)
    assert_bystanders_fine(tenant, db, good, [bystander, late], report_pid, stack)
    wait_for("the deadline", lambda: any(r["last_error"] for r in outbox(db, slow).values()))
    # The sender hung up at its deadline, long before the receiver would have stopped.
    wait_for("the sender to hang up", drip.client_left.is_set, timeout=30)
    rows = outbox(db, slow)
    cut = [r for r in rows.values() if r["last_error"]]
    assert cut and all("deadline" in r["last_error"] for r in cut), rows
    assert all(r["delivered_at"] is None for r in rows.values())


def test_gigabyte_response_is_not_read(
    tenant: Tenant,
    db: psycopg.Connection[Any],
    receivers: Callable[..., Receiver],
    report_pid: int,
    stack: Any,
) -> None:
    good = receivers("ok")
    flood = receivers("gigabytes")
    big = tenant.job(flood.url)
    bystander = tenant.job(good.url)
    tenant.seal(big)
    tenant.seal(bystander)
    wait_for("the flood receiver's request", lambda: bool(flood.received))
    late = tenant.job(good.url)
    tenant.seal(late)
    assert_bystanders_fine(tenant, db, good, [bystander, late], report_pid, stack)
    # 2xx then a 2 GiB body: delivered, and the sender stopped reading after a few KB (what
    # went out is what the kernel buffers took, far from the 256 MiB a full read reaches).
    wait_for("the flood delivery", lambda: all(r["delivered_at"] for r in outbox(db, big).values()))
    wait_for("the sender to hang up", flood.client_left.is_set, timeout=30)
    assert flood.sent_bytes < 32 * MIB, flood.sent_bytes
    assert all(r["attempts"] == 1 for r in outbox(db, big).values())


def test_redirect_is_not_followed(
    tenant: Tenant,
    db: psycopg.Connection[Any],
    receivers: Callable[..., Receiver],
    report_pid: int,
    stack: Any,
) -> None:
    good = receivers("ok")
    internal = receivers("ok")
    hop = receivers("redirect", location=internal.url.replace("/hook", "/internal"))
    redirected = tenant.job(hop.url)
    bystander = tenant.job(good.url)
    tenant.seal(redirected)
    tenant.seal(bystander)
    wait_for("the redirect", lambda: all(r["last_error"] for r in outbox(db, redirected).values()))
    late = tenant.job(good.url)
    tenant.seal(late)
    assert_bystanders_fine(tenant, db, good, [bystander, late], report_pid, stack)
    for row in outbox(db, redirected).values():
        assert row["delivered_at"] is None
        assert row["last_error"].startswith("HTTP 307"), row
    assert internal.received == [], "the redirect target was called"
