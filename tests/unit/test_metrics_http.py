"""Every stage serves /metrics, /health and /ready on its metrics port."""

from __future__ import annotations

import socket
import urllib.error
import urllib.request

from shared.metrics import Health, serve_metrics


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get(port: int, path: str) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def test_probes_follow_the_health_state() -> None:
    port = _free_port()
    health = serve_metrics(port, Health(stale_after_s=60))
    assert _get(port, "/metrics") == 200
    assert _get(port, "/health") == 200
    assert _get(port, "/ready") == 503  # not ready until the service says so
    health.ready = True
    assert _get(port, "/ready") == 200
    health.last_beat -= 120  # the main loop stopped beating: wedged
    assert _get(port, "/health") == 503
    assert _get(port, "/ready") == 503
    assert _get(port, "/nope") == 404
