"""The local stack: Kafka (KRaft), Postgres, Redis, the fake LLM and every pipeline service.

`Stack(profile).up()` starts what is not running and reuses what is (it is idempotent), applies
migrations, creates topics and a dev API key, writes `<home>/stack.env`, and last starts a
Prometheus scraping every service with the alert rules of deploy/prometheus/rules. Everything it
starts is tracked by PID under `<home>/run/` and stopped by exactly that PID (`down`,
`stop_service`).

A component whose URL is given in the environment (KAFKA_BOOTSTRAP_SERVERS, DATABASE_URL,
REDIS_URL, VOC_LLM_BASE_URL) is used as is and not started.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import functools
import logging
import os
import secrets
import shutil
import signal
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from voc import kafka_dist, pg, procs, redis_local, stackenv, sysdeps
from voc import prometheus as prom
from voc.profiles import METRICS_SLOTS, PROFILES, Profile

log = logging.getLogger("voc.stack")

ROOT = Path(__file__).resolve().parents[1]

# name -> module run as `python -m <module>`. A service is started only once its package has a
# __main__.py, so the stack works while services are still being written. Metrics ports are
# assigned in this order from the profile's metrics_base: keep existing entries where they are
# and append new services at the end (max METRICS_SLOTS).
SERVICES: dict[str, str] = {
    "api": "services.api",
    "ingest": "services.ingest",
    "learn": "services.learn",
    "translate": "services.translate",
    "insight": "services.insight",
    "theme": "services.theme",
    "report": "services.report",
    "lag-exporter": "services.lag_exporter",
}
# Stages that may run as several replicas (`voc up --replicas insight=3`, `voc scale`): each
# replica is one more member of the stage's consumer groups. Replica 1 is the service's own
# name; replica n > 1 is "<service>.<n>", with its own PID file, log and metrics port.
SCALABLE = ("ingest", "learn", "translate", "insight", "theme", "report")
MAX_REPLICAS = 9
FAKE_LLM = "fake-llm"
FAKE_LLM_MODULE = "voc.fake_llm"
FAKE_LLM_KEY = "fake-key"
DEV_TENANT = "dev"
PROMETHEUS = "prometheus"
DEFAULT_TOPIC_PREFIX = "voc."


class StackError(RuntimeError):
    """The stack could not be brought to the requested state (message says why and what to do)."""


def base_service(name: str) -> str:
    """The service a component name runs: "insight.2" -> "insight"."""
    return name.split(".", 1)[0]


def replica_name(service: str, n: int) -> str:
    """The component name of replica `n` (1-based) of `service`."""
    return service if n == 1 else f"{service}.{n}"


def replica_number(name: str) -> int:
    """1 for "insight", 2 for "insight.2"."""
    _, _, n = name.partition(".")
    return int(n) if n else 1


def parse_replicas(text: str) -> dict[str, int]:
    """`"insight=3,translate=2"` -> {"insight": 3, "translate": 2} (validated)."""
    counts: dict[str, int] = {}
    for item in text.split(","):
        if not item.strip():
            continue
        service, sep, count = item.partition("=")
        service = service.strip()
        if not sep or service not in SCALABLE:
            raise StackError(
                f"bad replica count {item.strip()!r}: want SERVICE=N, SERVICE one of "
                f"{', '.join(SCALABLE)}"
            )
        try:
            n = int(count)
        except ValueError:
            raise StackError(f"bad replica count {item.strip()!r}: N must be a number") from None
        if not 1 <= n <= MAX_REPLICAS:
            raise StackError(f"{service}: replicas must be 1..{MAX_REPLICAS}, not {n}")
        counts[service] = n
    return counts


@dataclass
class ComponentStatus:
    """One line of `voc status`."""

    name: str
    pid: int | None
    alive: bool
    port: int | None
    url: str
    external: bool = False


@dataclass
class UpResult:
    """What `Stack.up()` did."""

    env: dict[str, str]
    started: list[str] = field(default_factory=list)
    reused: list[str] = field(default_factory=list)
    external: list[str] = field(default_factory=list)
    seconds: float = 0.0


def _with_offset(profile: Profile) -> Profile:
    """The profile with every port shifted by $VOC_PORT_OFFSET (two copies on one host)."""
    offset = int(os.environ.get("VOC_PORT_OFFSET") or 0)
    if not offset:
        return profile
    ports = {
        f.name: getattr(profile, f.name) + offset
        for f in dataclasses.fields(profile)
        if f.name.endswith(("_port", "_base"))
    }
    return dataclasses.replace(profile, **ports)


def _own_urls(attr: str) -> set[str]:
    return {str(getattr(p, attr)) for p in PROFILES.values()}


class Stack:
    """One profile's local stack, rooted at its home directory."""

    def __init__(self, profile: str = "dev", home: str | Path | None = None) -> None:
        if profile not in PROFILES:
            raise StackError(f"unknown profile {profile!r} (known: {', '.join(PROFILES)})")
        self.profile: Profile = _with_offset(PROFILES[profile])
        # VOC_HOME only applies to the profile it was written for: a shell that sourced the dev
        # stack.env must not move the test stack into the dev home.
        env_home = os.environ.get("VOC_HOME")
        env_profile = os.environ.get("VOC_PROFILE")
        if home is None and env_home and env_profile in (None, "", profile):
            home = env_home
        self.home = Path(home) if home else ROOT / self.profile.home_dirname
        self.home = self.home.resolve()
        self._lock_depth = 0

    # ----------------------------------------------------------------------------- paths & ids
    @property
    def env_file(self) -> Path:
        return self.home / "stack.env"

    def log_path(self, name: str) -> Path:
        return self.home / "logs" / f"{name}.log"

    def pid_path(self, name: str) -> Path:
        return self.home / "run" / f"{name}.pid"

    @property
    def _pg_dir(self) -> Path:
        """The stack's Postgres directory (a symlink when the cluster lives elsewhere)."""
        return self.home / "postgres"

    @property
    def _kafka_dir(self) -> Path:
        return self.home / "kafka"

    @property
    def _prometheus_dir(self) -> Path:
        return self.home / "prometheus"

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """Serialise up/down/start across processes (re-entrant within this object)."""
        if self._lock_depth:
            self._lock_depth += 1
            try:
                yield
            finally:
                self._lock_depth -= 1
            return
        (self.home / "run").mkdir(parents=True, exist_ok=True)
        with (self.home / "run" / "stack.lock").open("w") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            self._lock_depth = 1
            try:
                yield
            finally:
                self._lock_depth = 0

    # ------------------------------------------------------------------------ what runs where
    def _external(self, var: str, own: set[str], mine: str) -> str | None:
        """The externally given URL in `var`, or None if this stack should run its own."""
        value = os.environ.get(var, "").strip()
        if not value or value == mine:
            return None
        if value in own:
            log.warning(
                "ignoring %s=%s: it is another local profile's own (a sourced stack.env?)",
                var,
                value,
            )
            return None
        return value

    def external_kafka(self) -> str | None:
        return self._external(
            "KAFKA_BOOTSTRAP_SERVERS", _own_urls("kafka_url"), self.profile.kafka_url
        )

    def external_database(self) -> str | None:
        return self._external("DATABASE_URL", _own_urls("database_url"), self.profile.database_url)

    def external_redis(self) -> str | None:
        return self._external("REDIS_URL", _own_urls("redis_url"), self.profile.redis_url)

    def external_llm(self) -> str | None:
        own = {u + "/v1" for u in _own_urls("fake_llm_url")}
        return self._external("VOC_LLM_BASE_URL", own, self.profile.fake_llm_url + "/v1")

    def metrics_port(self, name: str) -> int:
        """The metrics port of a service or replica: the first replicas of all services take
        the first slots after `metrics_base`, further replicas a block after those."""
        index = list(SERVICES).index(base_service(name))
        if index >= METRICS_SLOTS:
            raise StackError(f"no metrics port left for {name}: raise METRICS_SLOTS")
        n = replica_number(name)
        if n == 1:
            return self.profile.metrics_base + index
        return self.profile.metrics_base + METRICS_SLOTS + index * (MAX_REPLICAS - 1) + n - 2

    def replicas(self, service: str) -> list[str]:
        """The running replicas of `service` (its own name first, then "<service>.<n>")."""
        names = [service] if self._pid(service) is not None else []
        run = self.home / "run"
        extra = sorted(
            (p.stem for p in run.glob(f"{service}.*.pid")) if run.is_dir() else (),
            key=replica_number,
        )
        return names + [n for n in extra if self._pid(n) is not None]

    def _extra_replicas(self) -> list[str]:
        """Running replicas beyond each service's first."""
        return [n for s in SCALABLE for n in self.replicas(s) if n != s]

    def _process_names(self) -> list[str]:
        """Every PID-tracked component, in start order."""
        return ["kafka", "redis", FAKE_LLM, *SERVICES, *self._extra_replicas(), PROMETHEUS]

    # --------------------------------------------------------------------------- pid tracking
    def _pid(self, name: str) -> int | None:
        """The PID of our running `name`, or None."""
        if name == "postgres":
            return pg.postmaster_pid(self._pg_dir / "data")
        return procs.owned_pid(self.pid_path(name))

    def service_pid(self, name: str) -> int | None:
        """PID of a running component started by this stack (service, fake-llm, kafka, ...)."""
        return self._pid(name)

    def is_running(self) -> bool:
        """True if any component started by this stack is alive."""
        return any(self._pid(n) for n in [*self._process_names(), "postgres"])

    def _spawn(
        self, name: str, argv: list[str], extra_env: dict[str, str], ports: Iterable[int]
    ) -> tuple[int, bool]:
        """Start `name` unless ours already runs; returns (pid, started_now)."""
        running = self._pid(name)
        if running is not None:
            return running, False
        for port in ports:
            # A just-killed process's port frees at once, but give a stopping one a moment.
            if not procs.wait_until(functools.partial(_port_free, port), timeout=5):
                raise StackError(
                    f"{name}: port {port} is in use by a process this stack did not start "
                    f"(stop it, or use another profile)"
                )
        env = {
            **os.environ,
            **self._read_env(),
            **extra_env,
            "PYTHONUNBUFFERED": "1",
        }
        pid = procs.spawn(argv, env=env, log_path=self.log_path(name), cwd=ROOT)
        procs.write_pid(self.pid_path(name), pid)
        return pid, True

    def _read_env(self) -> dict[str, str]:
        return stackenv.parse_env_file(self.env_file) if self.env_file.exists() else {}

    # ----------------------------------------------------------------------------- components
    def _start_kafka(self) -> tuple[int, bool]:
        running = self._pid("kafka")
        if running is not None:
            return running, False
        kafka_dist.ensure_jars()
        self._kafka_dir.mkdir(parents=True, exist_ok=True)
        config = self._kafka_dir / "server.properties"
        data = self._kafka_dir / "data"
        config.write_text(
            kafka_dist.server_properties(
                data_dir=data,
                port=self.profile.kafka_port,
                controller_port=self.profile.controller_port,
            )
        )
        kafka_dist.format_storage(kafka_dir=self._kafka_dir, config=config, data_dir=data)
        return self._spawn(
            "kafka",
            kafka_dist.broker_command(config),
            {},
            [self.profile.kafka_port, self.profile.controller_port],
        )

    def _wait_kafka(self, bootstrap: str, pid: int | None, timeout: float) -> None:
        host, _, port = bootstrap.split(",")[0].rpartition(":")

        def ready() -> bool:
            if pid is not None and not procs.is_alive(pid):
                raise StackError(f"kafka exited:\n{procs.tail(self.log_path('kafka'))}")
            return procs.port_open(int(port), host or "127.0.0.1") and kafka_dist.metadata_ok(
                bootstrap
            )

        if not procs.wait_until(ready, timeout=timeout, interval=0.25):
            raise StackError(
                f"kafka at {bootstrap} not ready after {timeout:.0f}s:\n"
                f"{procs.tail(self.log_path('kafka'))}"
            )

    def _start_postgres(self) -> tuple[int, bool, bool]:
        """Returns (pid, started_now, created_now)."""
        pg.cluster_dir(self._pg_dir)  # moves it out of a home the postgres user cannot reach
        created = pg.init(self._pg_dir)
        running = pg.postmaster_pid(self._pg_dir / "data")
        if running is not None:
            pid, started = running, False
        else:
            pid = pg.start(self._pg_dir, self.profile.postgres_port, self.log_path("postgres"))
            started = True
        procs.write_pid(self.pid_path("postgres"), pid)  # for status; postmaster.pid rules
        pg.ensure_database(self.profile.postgres_port)
        return pid, started, created

    def _start_redis(self) -> tuple[int, bool]:
        pid, started = self._spawn(
            "redis",
            redis_local.command(self.profile.redis_port, self.home / "redis"),
            {},
            [self.profile.redis_port],
        )
        port = self.profile.redis_port
        if not procs.wait_until(lambda: redis_local.ping(port), timeout=15):
            raise StackError(f"redis not answering PING:\n{procs.tail(self.log_path('redis'))}")
        return pid, started

    def _start_prometheus(self, values: dict[str, str], timeout: float) -> tuple[int, bool]:
        """Start (or reuse and reload) Prometheus scraping the services in `values`.

        The config is rewritten on every `up`: a running Prometheus is told to re-read it with
        POST /-/reload. Returns (pid, started_now) once it answers /-/ready.
        """
        port = self.profile.prometheus_port
        ports = prom.ports_from_stack_env(values)
        ports.update({n: self.metrics_port(n) for n in self._extra_replicas()})
        config = prom.render_local_prometheus_config(ports, self._prometheus_dir / "prometheus.yml")
        try:
            argv = prom.prometheus_command(self._prometheus_dir, config, port=port)
        except sysdeps.MissingDependency as exc:
            raise StackError(f"prometheus: {exc}") from exc
        pid, started = self._spawn(PROMETHEUS, argv, {}, [port])
        if not started:
            ok, detail = _http_post(f"{self.profile.prometheus_url}/-/reload")
            if not ok:
                raise StackError(
                    f"prometheus (pid {pid}) did not reload {config}: {detail}\n"
                    f"{procs.tail(self.log_path(PROMETHEUS), 10)}"
                )
        self.wait_healthy([PROMETHEUS], timeout=timeout)
        return pid, started

    def _service_argv(self, name: str) -> tuple[list[str], dict[str, str], list[int]]:
        if name == FAKE_LLM:
            port = self.profile.fake_llm_port
            return [sys.executable, "-m", FAKE_LLM_MODULE, "--port", str(port)], {}, [port]
        service = base_service(name)
        if service not in SERVICES:
            raise StackError(f"unknown service {name!r} (known: {', '.join(SERVICES)})")
        n = replica_number(name) if "." in name else 1
        if n != 1 and (service not in SCALABLE or not 2 <= n <= MAX_REPLICAS):
            raise StackError(f"no replica {name!r}: {', '.join(SCALABLE)} scale to {MAX_REPLICAS}")
        metrics = self.metrics_port(name)
        env = {"VOC_SERVICE_NAME": service, "VOC_METRICS_PORT": str(metrics), "VOC_INSTANCE": name}
        ports = [metrics]
        if name == "api":
            env["VOC_API_PORT"] = str(self.profile.api_port)
            ports.append(self.profile.api_port)
        return [sys.executable, "-m", SERVICES[service]], env, ports

    # ------------------------------------------------------------------------------ health
    def _healthy(self, name: str, require_metrics: bool = True) -> bool:
        if name == "api":
            return _http_ok(self.profile.api_url + "/health")
        if name == FAKE_LLM:
            return procs.port_open(self.profile.fake_llm_port)
        if base_service(name) in SERVICES:
            return not require_metrics or procs.port_open(self.metrics_port(name))
        if name == "redis":
            return redis_local.ping(self.profile.redis_port)
        if name == "postgres":
            return procs.port_open(self.profile.postgres_port)
        if name == "kafka":
            return kafka_dist.metadata_ok(self.profile.kafka_url)
        if name == PROMETHEUS:
            return prom.ready(self.profile.prometheus_port)
        raise StackError(f"unknown component {name!r}")

    def wait_healthy(
        self,
        names: Iterable[str] | None = None,
        timeout: float = 90.0,
        require_metrics: bool = True,
    ) -> None:
        """Wait until each named service (default: all running ones) answers its health check.

        The API must answer GET /health with 200, the fake LLM its port, other services their
        metrics port (unless `require_metrics` is False). Raises StackError with the log tail
        if one exits or the timeout passes.
        """
        pending = list(names) if names is not None else self._running_services()
        deadline = time.monotonic() + timeout
        while pending:
            for name in list(pending):
                if self._pid(name) is None:
                    code = procs.exit_code(procs.read_pid(self.pid_path(name)) or 0)
                    how = "is not running" if code is None else f"exited with status {code}"
                    raise StackError(f"{name} {how}:\n{procs.tail(self.log_path(name))}")
                if self._healthy(name, require_metrics):
                    pending.remove(name)
            if pending and time.monotonic() >= deadline:
                tails = "\n".join(
                    f"--- {n} ({self.log_path(n)}):\n{procs.tail(self.log_path(n), 10)}"
                    for n in pending
                )
                raise StackError(f"not healthy after {timeout:.0f}s: {', '.join(pending)}\n{tails}")
            if pending:
                time.sleep(0.2)

    def _running_services(self) -> list[str]:
        names = [FAKE_LLM, *SERVICES, *self._extra_replicas()]
        return [n for n in names if self._pid(n) is not None]

    # --------------------------------------------------------------------- single services
    def start_service(self, name: str, wait: bool = True, timeout: float = 90.0) -> int:
        """Start one service (or the fake LLM) while the rest runs; returns its PID."""
        if not self.env_file.exists():
            raise StackError(f"no {self.env_file}: run `voc up --profile {self.profile.name}`")
        with self._locked():
            argv, env, ports = self._service_argv(name)
            pid, _ = self._spawn(name, argv, env, ports)
        if wait:
            self.wait_healthy([name], timeout=timeout)
        return pid

    def stop_service(self, name: str, sig: int = signal.SIGTERM, timeout: float = 15.0) -> None:
        """Stop a component started by this stack: `sig`, then SIGKILL after `timeout`."""
        with self._locked():
            pid = self._pid(name)
            if pid is not None:
                procs.terminate(pid, sig=sig, timeout=timeout)
            if name != "postgres":
                self.pid_path(name).unlink(missing_ok=True)

    def kill_service(self, name: str) -> None:
        """SIGKILL a component by its PID (no graceful shutdown), as a crash would."""
        pid = self._pid(name)
        if pid is None:
            raise StackError(f"{name} is not running")
        os.kill(pid, signal.SIGKILL)
        if not procs.wait_until(lambda: not procs.is_alive(pid), timeout=10):
            raise StackError(f"{name} (pid {pid}) survived SIGKILL")
        self.pid_path(name).unlink(missing_ok=True)

    def restart_service(self, name: str, timeout: float = 90.0) -> int:
        """Gracefully stop, start and wait for one service; returns the new PID."""
        self.stop_service(name)
        return self.start_service(name, timeout=timeout)

    def scale(
        self, service: str, count: int, *, sig: int = signal.SIGTERM, timeout: float = 90.0
    ) -> list[str]:
        """Run exactly `count` replicas of `service`: start the missing ones (numbers
        1..count), stop those above with `sig` (SIGKILL is a crash; SIGTERM leaves the
        group cleanly). Prometheus is told about the new set. Returns the running replicas.
        """
        parse_replicas(f"{service}={count}")  # validates both
        running = self.replicas(service)
        wanted = [replica_name(service, n) for n in range(1, count + 1)]
        for name in [n for n in running if n not in wanted]:
            if sig == signal.SIGKILL:
                self.kill_service(name)
            else:
                self.stop_service(name, sig=sig)
            log.info("%-12s stopped (%s)", name, signal.Signals(sig).name)
        missing = [n for n in wanted if n not in running]
        for name in missing:
            self.start_service(name, wait=False)
        if missing:
            self.wait_healthy(missing, timeout=timeout)
            for name in missing:
                log.info("%-12s started (pid %s)", name, self._pid(name))
        if self._pid(PROMETHEUS) is not None:
            self._start_prometheus(self._read_env(), timeout)
        return self.replicas(service)

    # ------------------------------------------------------------------------------- up/down
    def selected_services(self, services: bool | Iterable[str] = True) -> list[str]:
        """Which services `up` starts: all available, none, the given ones, or $VOC_SERVICES."""
        if services is False:
            return []
        if services is True:
            wanted = os.environ.get("VOC_SERVICES", "").strip()
            if not wanted:
                return list(SERVICES)
            services = [n.strip() for n in wanted.split(",") if n.strip()]
        names = list(services)
        for name in names:
            self._service_argv(name)  # raises a clear error for an unknown service
        return names

    def up(
        self,
        services: bool | Iterable[str] = True,
        timeout: float = 120.0,
        replicas: Mapping[str, int] | None = None,
    ) -> UpResult:
        """Start (or reuse) everything and write stack.env. Idempotent.

        `services`: True = every service (or those named in $VOC_SERVICES, comma-separated),
        False = none, or the names to start. `replicas` (default: $VOC_REPLICAS, e.g.
        "insight=3") sets how many replicas of a started stage run; replicas already
        running beyond that are left alone unless a count is given for their stage.
        """
        if replicas is None:
            replicas = parse_replicas(os.environ.get("VOC_REPLICAS", ""))
        begun = time.monotonic()
        result = UpResult(env={})

        def note(name: str, started: bool, t0: float) -> None:
            (result.started if started else result.reused).append(name)
            verb = "started" if started else "already running"
            log.info("%-12s %s (pid %s, %.1fs)", name, verb, self._pid(name), time.monotonic() - t0)

        with self._locked():
            for sub in ("logs", "run"):
                (self.home / sub).mkdir(parents=True, exist_ok=True)
            previous = self._read_env()

            kafka = self.external_kafka()
            kafka_pid: int | None = None
            kafka_started = False
            t_kafka = time.monotonic()
            if kafka is None:
                kafka = self.profile.kafka_url
                kafka_pid, kafka_started = self._start_kafka()  # boots while Postgres starts
            else:
                result.external.append("kafka")

            database = self.external_database()
            fresh_db = False
            if database is None:
                t0 = time.monotonic()
                database = self.profile.database_url
                _, started, fresh_db = self._start_postgres()
                note("postgres", started, t0)
            else:
                result.external.append("postgres")

            redis_url = self.external_redis()
            if redis_url is None:
                t0 = time.monotonic()
                redis_url = self.profile.redis_url
                _, started = self._start_redis()
                note("redis", started, t0)
            else:
                result.external.append("redis")

            self._wait_kafka(kafka, kafka_pid, timeout)
            if kafka_pid is not None:
                note("kafka", kafka_started, t_kafka)

            prefix = os.environ.get("VOC_TOPIC_PREFIX") or DEFAULT_TOPIC_PREFIX
            _migrate(database)
            _ensure_topics(kafka, prefix)
            # The dev key is made once and kept in stack.env (a new database needs a new one).
            api_key = "" if fresh_db else previous.get("VOC_API_KEY", "")
            if not api_key:
                api_key = _create_api_key(database, DEV_TENANT)

            llm = self.external_llm()
            use_fake = llm is None
            if llm is not None:
                result.external.append("llm")
            else:
                llm = self.profile.fake_llm_url + "/v1"

            values = self._stack_values(
                api_key=api_key,
                kafka=kafka,
                prefix=prefix,
                database=database,
                redis_url=redis_url,
                llm=llm or "",
                use_fake=use_fake,
                callback_secret=previous.get("VOC_CALLBACK_SECRET") or secrets.token_hex(32),
            )
            stackenv.write_env_file(
                self.env_file,
                values,
                f"vocstream {self.profile.name} stack, written by `voc up`. "
                f'Load with: eval "$(voc env --profile {self.profile.name})"',
            )

            selected = self.selected_services(services)
            names = [FAKE_LLM] if use_fake else []
            names += selected
            names += [
                replica_name(svc, n)
                for svc, count in replicas.items()
                if svc in selected
                for n in range(2, count + 1)
            ]
            self._launch(names, timeout, result)
            for svc, count in replicas.items():
                for name in self.replicas(svc)[count:]:
                    self.stop_service(name)
                    log.info("%-12s stopped (scaled to %d)", name, count)

            t0 = time.monotonic()
            _, started = self._start_prometheus(values, timeout)
            note(PROMETHEUS, started, t0)

        result.env = self.env()
        result.seconds = time.monotonic() - begun
        return result

    def _stack_values(
        self,
        *,
        api_key: str,
        kafka: str,
        prefix: str,
        database: str,
        redis_url: str,
        llm: str,
        use_fake: bool,
        callback_secret: str,
    ) -> dict[str, str]:
        """Everything stack.env holds: URLs, the dev key, profile and port assignments."""
        values = {
            "VOC_ENV": self.profile.name,
            "VOC_PROFILE": self.profile.name,
            "VOC_HOME": str(self.home),
            "VOC_API_URL": self.profile.api_url,
            "VOC_API_KEY": api_key,
            "KAFKA_BOOTSTRAP_SERVERS": kafka,
            "VOC_TOPIC_PREFIX": prefix,
            "DATABASE_URL": database,
            "REDIS_URL": redis_url,
            "VOC_FAKE_LLM_URL": self.profile.fake_llm_url if use_fake else "",
            "VOC_PROMETHEUS_URL": self.profile.prometheus_url,
            "VOC_LLM_BASE_URL": llm,
            # A real provider's key stays in the caller's environment, never on disk.
            "VOC_LLM_API_KEY": FAKE_LLM_KEY if use_fake else "",
            "VOC_API_PORT": str(self.profile.api_port),
            "VOC_FAKE_LLM_PORT": str(self.profile.fake_llm_port),
            "VOC_KAFKA_PORT": str(self.profile.kafka_port),
            "VOC_KAFKA_CONTROLLER_PORT": str(self.profile.controller_port),
            "VOC_POSTGRES_PORT": str(self.profile.postgres_port),
            "VOC_REDIS_PORT": str(self.profile.redis_port),
            "VOC_METRICS_PORT_BASE": str(self.profile.metrics_base),
            "VOC_PORT_OFFSET": os.environ.get("VOC_PORT_OFFSET", "").strip(),
            # A local stack's own secret for signing callbacks (stack.env is mode 600).
            "VOC_CALLBACK_SECRET": callback_secret,
            # Tests receive callbacks on loopback; elsewhere the SSRF guard refuses it.
            "VOC_CALLBACK_ALLOW_HOSTS": "127.0.0.1,::1" if self.profile.name == "test" else "",
            # Tests wait out the retry tiers: keep them short there.
            "VOC_RETRY_DELAYS_S": "1,2,3" if self.profile.name == "test" else "",
        }
        values.update({stackenv.metrics_env_key(s): str(self.metrics_port(s)) for s in SERVICES})
        return values

    def _launch(self, names: list[str], timeout: float, result: UpResult) -> None:
        """Start the fake LLM and services that are not running, then wait for all of them."""
        launched: list[tuple[str, float, bool]] = []
        for name in names:
            t0 = time.monotonic()
            argv, env, ports = self._service_argv(name)
            _, started = self._spawn(name, argv, env, ports)
            launched.append((name, t0, started))
            (result.started if started else result.reused).append(name)
        # Started together, then waited for together: imports overlap on both cores.
        self._wait_services([n for n, _, _ in launched], timeout)
        for name, t0, started in launched:
            verb = "started" if started else "already running"
            log.info("%-12s %s (pid %s, %.1fs)", name, verb, self._pid(name), time.monotonic() - t0)

    def _wait_services(self, names: list[str], timeout: float) -> None:
        # The API and the fake LLM must answer; a worker service whose metrics endpoint stays
        # silent is reported, not fatal, as long as its process keeps running.
        must = [n for n in names if n in ("api", FAKE_LLM)]
        self.wait_healthy(must, timeout=timeout)
        others = [n for n in names if n not in must]
        try:
            self.wait_healthy(others, timeout=min(timeout, 30.0))
        except StackError as exc:
            if any(self._pid(n) is None for n in others):
                raise
            log.warning("some services run but do not serve metrics yet: %s", exc)

    def down(self, purge: bool = False) -> list[str]:
        """Stop everything this stack started (by PID). `purge` also deletes the home."""
        stopped: list[str] = []
        with self._locked():
            # Postgres: SIGINT is its "fast" shutdown (SIGTERM would wait for clients to leave).
            stages = [*self._extra_replicas(), *reversed(SERVICES), FAKE_LLM]
            order = [(n, signal.SIGTERM, 15.0) for n in stages] + [
                (PROMETHEUS, signal.SIGTERM, 30.0),
                ("redis", signal.SIGTERM, 10.0),
                ("postgres", signal.SIGINT, 30.0),
                ("kafka", signal.SIGTERM, 45.0),
            ]
            plan = [(n, pid, sig, t) for n, sig, t in order if (pid := self._pid(n)) is not None]
            # Signal every service (and Prometheus) first, then wait: they stop in parallel.
            for name, pid, sig, _ in plan:
                if base_service(name) in SERVICES or name in (FAKE_LLM, PROMETHEUS):
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, sig)
            for name, pid, sig, timeout in plan:
                t0 = time.monotonic()
                forced = procs.terminate(pid, sig=sig, timeout=timeout)
                how = "killed (SIGKILL)" if forced else "stopped"
                log.info("%-12s %s (pid %s, %.1fs)", name, how, pid, time.monotonic() - t0)
                stopped.append(name)
            for name, _, _ in order:
                self.pid_path(name).unlink(missing_ok=True)
        if purge and self.home.exists():
            pg.remove_cluster(self._pg_dir)
            shutil.rmtree(self.home)
            log.info("removed %s", self.home)
        return stopped

    # ------------------------------------------------------------------------------ status
    def status(self) -> list[ComponentStatus]:
        """Every component: PID, alive, port and URL (external ones are probed, not tracked)."""
        rows: list[ComponentStatus] = []
        env = self._read_env()
        p = self.profile

        def infra(name: str, port: int, own_url: str, key: str, probe: Callable[[], bool]) -> None:
            url = env.get(key, own_url)
            if url != own_url:
                rows.append(ComponentStatus(name, None, probe(), None, url, external=True))
            else:
                pid = self._pid(name)
                rows.append(ComponentStatus(name, pid, pid is not None, port, url))

        infra(
            "kafka",
            p.kafka_port,
            p.kafka_url,
            "KAFKA_BOOTSTRAP_SERVERS",
            lambda: kafka_dist.metadata_ok(env["KAFKA_BOOTSTRAP_SERVERS"]),
        )
        infra("postgres", p.postgres_port, p.database_url, "DATABASE_URL", lambda: True)
        infra("redis", p.redis_port, p.redis_url, "REDIS_URL", lambda: True)
        pid = self._pid(PROMETHEUS)
        rows.append(
            ComponentStatus(PROMETHEUS, pid, pid is not None, p.prometheus_port, p.prometheus_url)
        )
        pid = self._pid(FAKE_LLM)
        rows.append(
            ComponentStatus(FAKE_LLM, pid, pid is not None, p.fake_llm_port, p.fake_llm_url)
        )
        for name in [*SERVICES, *self._extra_replicas()]:
            pid = self._pid(name)
            port = p.api_port if name == "api" else self.metrics_port(name)
            url = p.api_url if name == "api" else f"http://127.0.0.1:{port}/metrics"
            rows.append(ComponentStatus(name, pid, pid is not None, port, url))
        return rows

    # -------------------------------------------------------------------------------- env
    def env(self) -> dict[str, str]:
        """stack.env parsed into a dict (raises StackError if the stack was never brought up)."""
        if not self.env_file.exists():
            raise StackError(f"no {self.env_file}: run `voc up --profile {self.profile.name}`")
        return stackenv.parse_env_file(self.env_file)

    def create_api_key(self, tenant: str) -> str:
        """A new API key for `tenant` in this stack's database."""
        database = self.env().get("DATABASE_URL", self.profile.database_url)
        return _create_api_key(database, tenant)


# `shared` is imported only where `voc up` needs it: the CLI's other commands (and its start
# time) should not pay for SQLAlchemy, Alembic and aiokafka.
def _migrate(database_url: str) -> None:
    """Bring the schema to head (idempotent)."""
    from shared.db.migrate import upgrade

    t0 = time.monotonic()
    upgrade(database_url)
    log.info("%-12s migrations applied (%.1fs)", "postgres", time.monotonic() - t0)


def _ensure_topics(bootstrap_servers: str, prefix: str) -> None:
    """Create the registry's missing topics."""
    from shared.topics import ensure_topics_sync

    created = ensure_topics_sync(bootstrap_servers, prefix)
    if created:
        log.info("%-12s created %d topics (%s*)", "kafka", len(created), prefix)


def _create_api_key(database_url: str, tenant: str) -> str:
    """A new API key for `tenant`."""
    from shared.auth import create_api_key_sync

    key = str(create_api_key_sync(database_url, tenant))
    log.info("%-12s created API key for tenant %r", "postgres", tenant)
    return key


def _http_ok(url: str, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return bool(resp.status == 200)
    except OSError:
        return False


def _http_post(url: str, timeout: float = 10.0) -> tuple[bool, str]:
    """POST with an empty body: (True, status) on a 2xx, else (False, what went wrong)."""
    request = urllib.request.Request(url, data=b"", method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            return 200 <= resp.status < 300, f"HTTP {resp.status}"
    except urllib.error.HTTPError as exc:
        body = exc.read().decode(errors="replace").strip()
        return False, f"HTTP {exc.code}: {body}"
    except OSError as exc:
        return False, repr(exc)


def _port_free(port: int) -> bool:
    return not procs.port_open(port)
