"""`voc demo` and `voc analyze`: one job end to end through the API, report written to disk.

    voc demo                                   # the shipped ~300 earbuds reviews
    voc analyze reviews.csv --product "Acme kettle" --target-language en [--out DIR]

Both bring up (or reuse) the local stack, create a job over HTTP with the stack's API URL
and key, upload the file (CSV with a header row, NDJSON, or a JSON array), seal the job,
show a progress bar per stage from `GET /v1/jobs/{id}` until the job is `completed`, then
write `report.json` and `report.html` into the output folder (default
`out/demo-<job id>/` or `out/analyze-<job id>/`), and say who wrote the analysis: when it
is the bundled fake LLM (what `voc up` runs without a provider), it says so plainly and
how to point the stack at a real model (`VOC_LLM_BASE_URL`, with its key and model).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import httpx
import orjson

from shared.analyst import describe_analyst
from voc.commands import Subparsers, out, profile_parent, stack_of
from voc.stack import StackError

SAMPLE = Path(__file__).with_name("samples") / "earbuds_reviews.csv"
SAMPLE_PRODUCT = "Aurora wireless earbuds"
STAGES = (
    ("ingest", "ingested"),
    ("learn", "learned"),
    ("translate", "translated"),
    ("insight", "insights"),
    ("theme", "themed"),
)
BAR_WIDTH = 30
CONTENT_TYPES = {
    ".csv": "text/csv",
    ".ndjson": "application/x-ndjson",
    ".jsonl": "application/x-ndjson",
    ".json": "application/json",
}


class JobFailed(StackError):
    """The job did not complete (timeout, failure, or an API error); the message says why."""


def register(subparsers: Subparsers) -> None:
    """Add `demo` and `analyze` to the `voc` command line."""
    common = [profile_parent()]
    demo = subparsers.add_parser(
        "demo", parents=common, help="analyse the shipped sample reviews end to end"
    )
    _job_options(demo)
    demo.set_defaults(func=cmd_demo)

    analyze = subparsers.add_parser(
        "analyze", parents=common, help="analyse a CSV / NDJSON / JSON file of reviews"
    )
    analyze.add_argument("file", type=Path, help="reviews: .csv (header row), .ndjson, .json")
    analyze.add_argument("--product", required=True, help="what the reviews are about")
    analyze.add_argument("--target-language", required=True, help="language of the report, e.g. en")
    _job_options(analyze)
    analyze.set_defaults(func=cmd_analyze)


def _job_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", type=Path, default=None, help="output folder (default: out/...)")
    p.add_argument("--timeout", type=float, default=900.0, help="seconds to wait for completion")
    p.add_argument("--callback-url", default=None, help="URL to notify when the report is ready")
    p.add_argument(
        "--no-up", action="store_true", help="do not start the stack (use $VOC_API_URL/KEY)"
    )


def cmd_demo(args: argparse.Namespace) -> int:
    """`voc demo`."""
    return _run(args, SAMPLE, SAMPLE_PRODUCT, "en", "demo")


def cmd_analyze(args: argparse.Namespace) -> int:
    """`voc analyze FILE`."""
    if not args.file.is_file():
        raise StackError(f"{args.file}: no such file")
    return _run(args, args.file, args.product, args.target_language, "analyze")


def _run(args: argparse.Namespace, path: Path, product: str, language: str, kind: str) -> int:
    api_url, api_key = _api(args)
    with ApiClient(api_url, api_key) as api:
        out(f"voc: {kind}: {path.name} -> {api_url}")
        job = api.create_job(product, language, args.callback_url)
        job_id = str(job["id"])
        out(f"voc: job {job_id} created ({product!r}, target language {language})")
        upload = api.upload(job_id, path)
        _print_upload(upload)
        api.seal(job_id)
        renderer = ProgressRenderer(sys.stdout)
        final = api.wait_completed(job_id, args.timeout, renderer.update)
        renderer.finish()
        report = api.report(job_id)
    folder = args.out or Path("out") / f"{kind}-{job_id}"
    written = write_report(folder, report)
    _print_outcome(final, report, written)
    for line in analyst_lines(report.get("analyst") or describe_analyst()):
        out(line)
    return 0


def _api(args: argparse.Namespace) -> tuple[str, str]:
    if args.no_up:
        url, key = os.environ.get("VOC_API_URL", ""), os.environ.get("VOC_API_KEY", "")
    else:
        stack = stack_of(args)
        out(f"voc: bringing up the {stack.profile.name} stack (reused if running)...")
        env = stack.up().env
        url, key = env.get("VOC_API_URL", ""), env.get("VOC_API_KEY", "")
    if not url or not key:
        raise StackError("no API URL or key: run `voc up` (or set VOC_API_URL and VOC_API_KEY)")
    return url, key


@dataclass
class ApiClient:
    """The few API calls a job round trip needs, over HTTP with the tenant's key."""

    base_url: str
    api_key: str
    poll_s: float = 0.5

    def __post_init__(self) -> None:
        self.http = httpx.Client(
            base_url=self.base_url.rstrip("/"),
            headers={"Authorization": f"Bearer {self.api_key}"},
            timeout=httpx.Timeout(60.0, connect=5.0),
        )

    def __enter__(self) -> ApiClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.http.close()

    def _check(self, resp: httpx.Response, what: str) -> Any:
        if resp.status_code >= 400:
            raise JobFailed(f"{what}: HTTP {resp.status_code}: {resp.text[:500]}")
        return resp.json() if resp.content else None

    def create_job(self, product: str, language: str, callback_url: str | None) -> Any:
        """POST /v1/jobs."""
        body: dict[str, Any] = {"product": product, "target_language": language}
        if callback_url:
            body["callback_url"] = callback_url
        return self._check(self.http.post("/v1/jobs", json=body), "create job")

    def upload(self, job_id: str, path: Path) -> Any:
        """POST the file to /v1/jobs/{id}/reviews, streamed from disk."""
        ctype = CONTENT_TYPES.get(path.suffix.lower())
        if ctype is None:
            raise StackError(f"{path}: unknown file type (use .csv, .ndjson, .jsonl or .json)")
        with path.open("rb") as fh:
            resp = self.http.post(
                f"/v1/jobs/{job_id}/reviews",
                content=_chunks(fh),
                headers={"content-type": ctype},
                timeout=httpx.Timeout(600.0, connect=5.0),
            )
        return self._check(resp, "upload")

    def seal(self, job_id: str) -> Any:
        """POST /v1/jobs/{id}/seal: no more reviews."""
        return self._check(self.http.post(f"/v1/jobs/{job_id}/seal"), "seal")

    def job(self, job_id: str) -> Any:
        """GET /v1/jobs/{id}."""
        return self._check(self.http.get(f"/v1/jobs/{job_id}"), "job status")

    def report(self, job_id: str) -> Any:
        """GET /v1/jobs/{id}/report (the JSON document)."""
        return self._check(self.http.get(f"/v1/jobs/{job_id}/report"), "report")

    def wait_completed(
        self, job_id: str, timeout_s: float, on_update: Callable[[Mapping[str, Any], float], None]
    ) -> Any:
        """Poll the job until `completed`; raises `JobFailed` on failure or timeout."""
        started = time.monotonic()
        while True:
            job = self.job(job_id)
            elapsed = time.monotonic() - started
            on_update(job, elapsed)
            status = job.get("status")
            if status == "completed":
                return job
            if status == "failed":
                raise JobFailed(f"job {job_id} failed; see `voc logs report` and the API")
            if elapsed > timeout_s:
                raise JobFailed(
                    f"job {job_id} did not complete within {timeout_s:.0f}s "
                    f"(status {status!r}, counts {job.get('counts')}). The stack keeps "
                    f"working: check `voc status` and `voc logs <service>`, then fetch "
                    f"GET /v1/jobs/{job_id}/report later."
                )
            time.sleep(self.poll_s)


def _chunks(fh: IO[bytes], size: int = 256 * 1024) -> Any:
    while block := fh.read(size):
        yield block


def stage_rows(job: Mapping[str, Any]) -> list[tuple[str, int, int]]:
    """(stage, done, total) per stage from a job document of `GET /v1/jobs/{id}`."""
    counts = job.get("counts") or {}
    submitted = int(counts.get("submitted") or 0)
    ingested = int(counts.get("ingested") or 0)
    duplicates = int(counts.get("duplicates") or 0)
    expected = ingested if job.get("sealed_at") and ingested + duplicates >= submitted else None
    rows = []
    for stage, key in STAGES:
        done = int(counts.get(key) or 0)
        if stage == "ingest":
            rows.append((stage, ingested + duplicates, submitted))
        else:
            rows.append((stage, done, expected if expected is not None else max(submitted, done)))
    return rows


def bar(done: int, total: int, width: int = BAR_WIDTH) -> str:
    """`[#####-----]` for done/total."""
    frac = min(1.0, done / total) if total else 0.0
    full = round(frac * width)
    return "[" + "#" * full + "-" * (width - full) + "]"


class ProgressRenderer:
    """Per-stage progress bars: redrawn in place on a terminal, a line every 5 s otherwise."""

    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream
        self.tty = stream.isatty()
        self.drawn = 0
        self.last_line = 0.0

    def lines(self, job: Mapping[str, Any], elapsed: float) -> list[str]:
        """The text of one frame."""
        frame = []
        for stage, done, total in stage_rows(job):
            frame.append(f"  {stage:<10} {bar(done, total)} {done:>6}/{total:<6}")
        counts = job.get("counts") or {}
        frame.append(
            f"  status {job.get('status')!s:<13} dead-lettered {counts.get('dead_lettered', 0)}"
            f"   {elapsed:5.1f}s"
        )
        return frame

    def update(self, job: Mapping[str, Any], elapsed: float) -> None:
        """Draw the job's current state."""
        lines = self.lines(job, elapsed)
        if self.tty:
            if self.drawn:
                self.stream.write(f"\x1b[{self.drawn}F")
            self.stream.write("".join(f"\x1b[2K{line}\n" for line in lines))
            self.drawn = len(lines)
        elif (
            elapsed - self.last_line >= 5 or job.get("status") == "completed" or not self.last_line
        ):
            compact = " ".join(f"{s}={d}/{t}" for s, d, t in stage_rows(job))
            self.stream.write(f"  {elapsed:6.1f}s {job.get('status')} {compact}\n")
            self.last_line = max(elapsed, 1e-9)
        self.stream.flush()

    def finish(self) -> None:
        """Leave the last frame on screen."""
        self.stream.flush()


def write_report(folder: Path, report: Mapping[str, Any]) -> list[Path]:
    """Write `report.json` and `report.html` (rendered locally from the JSON)."""
    from shared.report_page import render_report_html

    folder.mkdir(parents=True, exist_ok=True)
    json_path = folder / "report.json"
    html_path = folder / "report.html"
    json_path.write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2))
    html_path.write_text(render_report_html(report), encoding="utf-8")
    return [json_path, html_path]


EXAMPLE_REAL_MODEL = (
    "VOC_LLM_BASE_URL=https://api.openai.com/v1 VOC_LLM_API_KEY=sk-... "
    "VOC_LLM_MODEL=gpt-4o-mini make demo"
)


def analyst_lines(analyst: Mapping[str, Any]) -> list[str]:
    """What the demo says at the end about who wrote the analysis (see `shared.analyst`)."""
    model = analyst.get("model")
    if not analyst.get("fake"):
        return [f"voc: analysis written by {model}"]
    return [
        f"voc: NOTE: a FAKE LLM wrote this analysis (the bundled {model}): a deterministic",
        "     keyword-and-lexicon reader for trying vocstream out, not a language model, so",
        "     its sentiment, aspects and translations are rough. For a real analysis, point",
        "     the stack at any OpenAI-compatible model (VOC_LLM_BASE_URL, with its key and",
        "     model) and run again:",
        "       make down",
        f"       {EXAMPLE_REAL_MODEL}",
    ]


def _print_upload(upload: Mapping[str, Any]) -> None:
    rejected = upload.get("rejected") or []
    out(
        f"voc: uploaded: {upload.get('accepted')} accepted, {upload.get('duplicates')} "
        f"duplicates, {upload.get('rejected_count', len(rejected))} rejected"
    )
    for r in rejected[:5]:
        out(f"       row {r.get('row')}: {r.get('error')}")


def _print_outcome(job: Mapping[str, Any], report: Mapping[str, Any], written: list[Path]) -> None:
    cov = report.get("coverage") or {}
    out(f"voc: job {job.get('id')} completed; coverage {cov.get('ratio', 0):.0%}")
    if cov.get("note"):
        out(f"     {cov['note']}")
    if report.get("summary"):
        out(f"     {report['summary']}")
    for path in written:
        out(f"voc: wrote {path}")
    out(f"voc: open {written[-1].resolve().as_uri()}")
