"""`voc init` (the deployments' setup step): it takes its settings from the environment only,
calls the migrations and topic creation with them, and fails with one line and status 1."""

from __future__ import annotations

import pytest

import shared.db.migrate
import shared.topics
from voc import cli

DB = "postgresql://voc:s3cret@db.example:5432/voc"
KAFKA = "kafka.example:9092"


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, ...]]:
    """Record the calls to upgrade/ensure_topics_sync instead of touching a database."""
    seen: list[tuple[str, ...]] = []
    monkeypatch.setattr(shared.db.migrate, "upgrade", lambda url: seen.append(("upgrade", url)))

    def ensure(bootstrap: str, prefix: str) -> list[str]:
        seen.append(("topics", bootstrap, prefix))
        return [] if len(seen) > 2 else ["voc.reviews.submitted"]

    monkeypatch.setattr(shared.topics, "ensure_topics_sync", ensure)
    monkeypatch.setenv("DATABASE_URL", DB)
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", KAFKA)
    monkeypatch.delenv("VOC_TOPIC_PREFIX", raising=False)
    return seen


def test_init_uses_the_environment_and_is_repeatable(
    calls: list[tuple[str, ...]], capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["init"]) == 0
    assert cli.main(["init"]) == 0  # a second run: nothing to do, still success
    assert calls == [("upgrade", DB), ("topics", KAFKA, "voc.")] * 2
    output = capsys.readouterr().out
    assert "s3cret" not in output  # the password is never printed
    assert "1 created" in output and "0 created" in output


def test_init_topic_prefix(calls: list[tuple[str, ...]], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VOC_TOPIC_PREFIX", "acme.")
    assert cli.main(["init"]) == 0
    assert calls[1] == ("topics", KAFKA, "acme.")


@pytest.mark.parametrize("var", ["DATABASE_URL", "KAFKA_BOOTSTRAP_SERVERS"])
def test_init_needs_its_settings(
    var: str,
    calls: list[tuple[str, ...]],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv(var, "")
    assert cli.main(["init"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and var in err
    assert calls == []  # nothing half done


def test_init_failure_is_one_line(
    calls: list[tuple[str, ...]],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    def broken(url: str) -> None:
        raise ConnectionError("connection refused\nis the server running?")

    monkeypatch.setattr(shared.db.migrate, "upgrade", broken)
    assert cli.main(["init"]) == 1
    err = capsys.readouterr().err
    assert err == "voc: error: migrations failed: ConnectionError: connection refused\n"
    assert calls == []  # topics are not touched after a failed migration


def test_init_takes_no_arguments() -> None:
    with pytest.raises(SystemExit) as exc:
        cli.build_parser().parse_args(["init", "--database-url", "x"])
    assert exc.value.code == 2


def test_init_kafka_failure_is_one_line(
    calls: list[tuple[str, ...]],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    class KafkaConnectionError(Exception):
        def __str__(self) -> str:  # aiokafka's errors name themselves
            return "KafkaConnectionError: Unable to bootstrap from [('kafka.example', 9092)]"

    def broken(bootstrap: str, prefix: str) -> list[str]:
        raise KafkaConnectionError()

    monkeypatch.setattr(shared.topics, "ensure_topics_sync", broken)
    assert cli.main(["init"]) == 1
    err = capsys.readouterr().err
    assert err == (
        f"voc: error: creating topics on {KAFKA} failed: "
        "KafkaConnectionError: Unable to bootstrap from [('kafka.example', 9092)]\n"
    )
