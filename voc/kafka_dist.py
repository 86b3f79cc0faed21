"""A real single-node Apache Kafka (KRaft) run from its Maven Central jars.

`tools/kafka/pom.xml` lists the jars; Maven copies them once into `tools/kafka/libs/` (ignored
by git, shared by every profile) and the broker runs as `java -cp 'libs/*' kafka.Kafka`. This
needs only Java and Maven: no tarball download, no Docker.
"""

from __future__ import annotations

import asyncio
import fcntl
import hashlib
import logging
import subprocess
import threading
import time
from pathlib import Path

from voc import sysdeps

log = logging.getLogger("voc.stack")

ROOT = Path(__file__).resolve().parents[1]
KAFKA_TOOLS = ROOT / "tools" / "kafka"
POM = KAFKA_TOOLS / "pom.xml"
LOG_CONFIG = KAFKA_TOOLS / "log4j2.properties"
LIBS = KAFKA_TOOLS / "libs"
STAMP = LIBS / ".complete"


def _pom_digest() -> str:
    return hashlib.sha256(POM.read_bytes()).hexdigest()


def ensure_jars() -> Path:
    """Download the broker's jars into tools/kafka/libs once (again only if pom.xml changes)."""
    LIBS.mkdir(parents=True, exist_ok=True)
    digest = _pom_digest()
    # Both profiles (and a test run racing a dev `voc up`) share the cache: serialise on a lock.
    with (LIBS / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if STAMP.exists() and STAMP.read_text().strip() == digest:
            return LIBS
        require_java()
        mvn = sysdeps.require("mvn", "maven")
        # The stamp is written last, so an interrupted download is redone from scratch rather
        # than leaving a half-filled classpath; stale jars of another version are removed.
        STAMP.unlink(missing_ok=True)
        for jar in LIBS.glob("*.jar"):
            jar.unlink()
        log.info("kafka: downloading broker jars with Maven (first run only)")
        started = time.monotonic()
        cmd = [
            mvn,
            "-q",
            "-B",
            "-f",
            str(POM),
            "dependency:copy-dependencies",
            f"-DoutputDirectory={LIBS}",
            "-DincludeScope=runtime",
        ]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"mvn failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
        STAMP.write_text(digest + "\n")
        log.info(
            "kafka: %d jars in %s (%.1fs)",
            len(list(LIBS.glob("*.jar"))),
            LIBS,
            time.monotonic() - started,
        )
    return LIBS


def require_java() -> str:
    """The java executable (installing a JRE with apt-get if missing)."""
    return sysdeps.require("java", "openjdk-17-jre-headless")


def server_properties(*, data_dir: Path, port: int, controller_port: int) -> str:
    """The broker config: the KRaft settings verified on this kind of machine (ENVIRONMENT.md)."""
    lines = {
        "process.roles": "broker,controller",
        "node.id": "1",
        # Not controller.quorum.voters: the formatter refuses it with --standalone.
        "controller.quorum.bootstrap.servers": f"127.0.0.1:{controller_port}",
        "listeners": f"PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}",
        "advertised.listeners": f"PLAINTEXT://127.0.0.1:{port}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
        "log.dirs": str(data_dir),
        "num.partitions": "6",
        "offsets.topic.replication.factor": "1",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        # Kafka 4.x share-group state topic defaults to RF 3, impossible on one node.
        "share.coordinator.state.topic.replication.factor": "1",
        "share.coordinator.state.topic.min.isr": "1",
        # Otherwise every first consumer-group join waits 3 s.
        "group.initial.rebalance.delay.ms": "0",
        "message.max.bytes": "8388608",
        "auto.create.topics.enable": "false",
    }
    body = "\n".join(f"{k}={v}" for k, v in lines.items())
    return f"# Written by `voc up` on every start; edit voc/kafka_dist.py instead.\n{body}\n"


def _java_cmd(java: str, main: str, *args: str, heap: str = "256m") -> list[str]:
    return [
        java,
        f"-Xmx{heap}",
        "-XX:+UseG1GC",
        "-Djava.awt.headless=true",
        f"-Dlog4j2.configurationFile={LOG_CONFIG}",
        "-cp",
        f"{LIBS}/*",
        main,
        *args,
    ]


def format_storage(*, kafka_dir: Path, config: Path, data_dir: Path) -> None:
    """Format the KRaft log dir once (a cluster id is generated and kept in kafka_dir)."""
    if (data_dir / "meta.properties").exists():
        return
    java = require_java()
    id_file = kafka_dir / "cluster.id"
    if not id_file.exists():
        out = subprocess.run(
            _java_cmd(java, "kafka.tools.StorageTool", "random-uuid"),
            capture_output=True,
            text=True,
            check=True,
        )
        id_file.write_text(out.stdout.strip().splitlines()[-1] + "\n")
    cluster_id = id_file.read_text().strip()
    done = subprocess.run(
        _java_cmd(
            java,
            "kafka.tools.StorageTool",
            "format",
            "-t",
            cluster_id,
            "-c",
            str(config),
            "--standalone",
        ),
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise RuntimeError(f"kafka storage format failed:\n{done.stdout}\n{done.stderr}")
    log.info("kafka: formatted %s (cluster id %s)", data_dir, cluster_id)


def broker_command(config: Path) -> list[str]:
    """argv that runs the broker in the foreground."""
    return _java_cmd(require_java(), "kafka.Kafka", str(config), heap="512m")


def metadata_ok(bootstrap_servers: str, timeout: float = 5.0) -> bool:
    """True if the cluster answers a metadata request and lists at least one broker."""
    result: list[bool] = [False]

    async def probe() -> None:
        from aiokafka.client import AIOKafkaClient

        client = AIOKafkaClient(
            bootstrap_servers=bootstrap_servers, request_timeout_ms=int(timeout * 1000)
        )
        try:
            await asyncio.wait_for(client.bootstrap(), timeout)
            result[0] = bool(client.cluster.brokers())
        finally:
            await client.close()

    def run() -> None:
        try:
            asyncio.run(probe())
        except Exception as exc:  # any failure simply means "not ready yet"
            log.debug("kafka metadata probe failed: %r", exc)

    # A thread of its own, so this also works when the caller has an event loop running.
    worker = threading.Thread(target=run, name="kafka-probe", daemon=True)
    worker.start()
    worker.join(timeout + 2)
    return result[0]
