"""One router per resource; `ROUTERS` is what the app mounts, in order.

Later stages add their read endpoints here as routers of their own (`reports`: the
`/v1/jobs/{job_id}/report` JSON and `report.html`; `insights`; `themes`), each reaching its
data through the same `SessionDep` / `TenantDep` dependencies.
"""

from fastapi import APIRouter

from . import callback_secrets, health, jobs, results, reviews

ROUTERS: tuple[APIRouter, ...] = (
    health.router,
    jobs.router,
    reviews.router,
    results.router,
    callback_secrets.router,
)
