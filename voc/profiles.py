"""Local stack profiles: each has its own home directory and ports, so a developer's `dev` stack
and the `test` stack used by `make test` can run side by side without colliding."""

from __future__ import annotations

from dataclasses import dataclass

# Services get consecutive metrics ports from Profile.metrics_base (see voc.stack.SERVICES).
METRICS_SLOTS = 20


@dataclass(frozen=True)
class Profile:
    """The fixed ports and default home (relative to the repository) of one local stack."""

    name: str
    home_dirname: str
    kafka_port: int
    controller_port: int
    postgres_port: int
    redis_port: int
    api_port: int
    fake_llm_port: int
    metrics_base: int
    prometheus_port: int

    @property
    def kafka_url(self) -> str:
        return f"127.0.0.1:{self.kafka_port}"

    @property
    def database_url(self) -> str:
        return f"postgresql://voc@127.0.0.1:{self.postgres_port}/voc"

    @property
    def redis_url(self) -> str:
        return f"redis://127.0.0.1:{self.redis_port}/0"

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    @property
    def fake_llm_url(self) -> str:
        return f"http://127.0.0.1:{self.fake_llm_port}"

    @property
    def prometheus_url(self) -> str:
        return f"http://127.0.0.1:{self.prometheus_port}"


PROFILES: dict[str, Profile] = {
    "dev": Profile("dev", ".voc", 19092, 19093, 15432, 16379, 8000, 8400, 9101, 9090),
    "test": Profile("test", ".voc-test", 29092, 29093, 25432, 26379, 28000, 28400, 29101, 29090),
}
