"""Background services on this host: ``tocsin start --detach``, ``tocsin stop``, pid files.

Each detached service is a ``tocsin start NAME`` process in its own session,
recorded in ``$TOCSIN_HOME/run/NAME.json`` (pid, command, start time) with its
output in ``$TOCSIN_HOME/logs/NAME.log``. ``stop`` sends SIGTERM, waits, then
SIGKILLs, and removes the record, so no tocsin process outlives it.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from tocsin.core import paths
from tocsin.core.errors import TocsinError
from tocsin.core.localkafka import _pid_alive

STOP_TIMEOUT_S = 30.0
START_GRACE_S = 3.0  # a service that dies this fast had a config or connection error: say so


@dataclass
class ServiceRecord:
    name: str
    pid: int
    started_at: float
    command: list[str]
    log_file: str

    @property
    def running(self) -> bool:
        return _pid_alive(self.pid)


def run_dir() -> Path:
    return paths.home() / "run"


def log_dir() -> Path:
    return paths.home() / "logs"


def _record_path(name: str) -> Path:
    return run_dir() / f"{name}.json"


def records() -> list[ServiceRecord]:
    out = []
    for path in sorted(run_dir().glob("*.json")) if run_dir().is_dir() else []:
        try:
            out.append(ServiceRecord(**json.loads(path.read_text())))
        except (OSError, ValueError, TypeError):
            continue
    return out


def start_detached(name: str, config_path: str | None = None, env: dict[str, str] | None = None) -> ServiceRecord:
    """Starts ``tocsin start NAME`` in the background; refuses if it already runs."""
    existing = next((r for r in records() if r.name == name), None)
    if existing and existing.running:
        raise TocsinError(f"{name} already runs as pid {existing.pid} (tocsin stop {name} first)")
    run_dir().mkdir(parents=True, exist_ok=True)
    log_dir().mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "tocsin", *(["--config", config_path] if config_path else []), "start", name]
    log_file = log_dir() / f"{name}.log"
    with open(log_file, "ab") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True, env=env)
    record = ServiceRecord(name, proc.pid, time.time(), command, str(log_file))
    _record_path(name).write_text(json.dumps(asdict(record)))
    deadline = time.monotonic() + START_GRACE_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            _record_path(name).unlink(missing_ok=True)
            tail = "\n".join(log_file.read_text(errors="replace").splitlines()[-15:])
            raise TocsinError(f"{name} exited with {proc.returncode} right after starting:\n{tail}")
        time.sleep(0.1)
    return record


def stop(names: list[str] | None = None, timeout_s: float = STOP_TIMEOUT_S) -> list[tuple[ServiceRecord, str]]:
    """Stops the named services (all if none); returns (record, "stopped"|"killed"|"not running")."""
    targets = [r for r in records() if not names or r.name in names]
    was_running = {r.name: r.running for r in targets}
    for r in targets:
        if r.running:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(r.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and any(r.running for r in targets):
        for r in targets:
            with contextlib.suppress(ChildProcessError):  # reap our own children: no zombies
                os.waitpid(r.pid, os.WNOHANG)
        time.sleep(0.2)
    out = []
    for r in targets:
        outcome = "stopped" if was_running[r.name] else "not running"
        if r.running:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(r.pid, signal.SIGKILL)
            outcome = "killed"
        _record_path(r.name).unlink(missing_ok=True)
        out.append((r, outcome))
    return out
