"""Find (and on Debian, as root, install) the system programs the local stack runs.

A fresh machine or CI runner has nothing running and maybe nothing installed; `voc up` must
still work, so a missing program is installed with apt-get when that is possible.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
from pathlib import Path

log = logging.getLogger("voc.stack")

_apt_updated = False


class MissingDependency(RuntimeError):
    """A program the stack needs is absent and could not be installed."""


def apt_install(*packages: str) -> None:
    """`apt-get install -y` the packages (after one `apt-get update` per process)."""
    global _apt_updated
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise MissingDependency(
            f"missing {', '.join(packages)}: install it (apt-get install {' '.join(packages)})"
        )
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    if not _apt_updated:
        log.info("apt-get update")
        subprocess.run(["apt-get", "update", "-q"], env=env, check=True, capture_output=True)
        _apt_updated = True
    log.info("apt-get install -y %s", " ".join(packages))
    subprocess.run(
        ["apt-get", "install", "-y", "-q", "--no-install-recommends", *packages],
        env=env,
        check=True,
        capture_output=True,
    )


def require(program: str, package: str) -> str:
    """The path of `program`, installing Debian `package` first if it is missing."""
    found = shutil.which(program)
    if found is None:
        apt_install(package)
        found = shutil.which(program)
    if found is None:
        raise MissingDependency(f"{program} not found even after installing {package}")
    return found


def postgres_bindir() -> Path:
    """The directory holding initdb/pg_ctl/postgres: PostgreSQL 15 preferred, else the newest."""

    def candidates() -> list[Path]:
        base = Path("/usr/lib/postgresql")
        dirs = [d / "bin" for d in base.glob("*") if (d / "bin" / "pg_ctl").exists()]
        dirs.sort(key=lambda p: (p.parent.name != "15", -_version(p.parent.name)))
        return dirs

    found = candidates()
    if not found:
        on_path = shutil.which("pg_ctl")
        if on_path:
            return Path(on_path).resolve().parent
        apt_install("postgresql")
        found = candidates()
    if not found:
        raise MissingDependency("PostgreSQL server binaries not found after apt-get install")
    return found[0]


def _version(name: str) -> int:
    try:
        return int(name)
    except ValueError:
        return 0
