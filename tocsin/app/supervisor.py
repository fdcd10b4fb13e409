"""Background services on this host: ``tocsin start --detach``, ``tocsin stop``, pid files.

Each detached service is a small supervisor (``python -m tocsin.app.supervisor
NAME``) in its own session that runs ``tocsin start NAME`` as its child and
starts it again when it dies of anything but a clean exit or a usage error,
with exponential backoff (as systemd's ``Restart=on-failure``): a failure a
process cannot recover from in place (the embedded store owner) ends that
process non-zero and comes back here. The service is recorded in
``$TOCSIN_HOME/run/NAME.json`` (supervisor pid, current child pid, restarts,
command, start time) with its output in ``$TOCSIN_HOME/logs/NAME.log``.
``stop`` sends SIGTERM to the session, waits, then SIGKILLs, and removes the
record, so no tocsin process outlives it.
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
USAGE_EXIT = 2  # typer/click and config errors: restarting cannot fix them (systemd's RestartPreventExitStatus)


@dataclass
class ServiceRecord:
    name: str
    pid: int
    started_at: float
    command: list[str]
    log_file: str
    child_pid: int | None = None
    restarts: int = 0

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
    supervise = [sys.executable, "-m", "tocsin.app.supervisor", name, "--", *command]
    with open(log_file, "ab") as out:
        proc = subprocess.Popen(supervise, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True, env=env)
    record = ServiceRecord(name, proc.pid, time.time(), command, str(log_file))
    _write_record(record)
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


def _write_record(record: ServiceRecord) -> None:
    """Atomically: ``tocsin status`` and ``stop`` may read it while the supervisor updates it."""
    path = _record_path(record.name)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(asdict(record)))
    tmp.replace(path)


@dataclass(frozen=True)
class RestartPolicy:
    """systemd's ``Restart=on-failure`` with a growing ``RestartSec``: 1 s, 2 s, 4 s ... 60 s, reset after 60 s up."""

    initial_s: float = 1.0
    max_s: float = 60.0
    reset_after_s: float = 60.0

    def delay(self, attempt: int) -> float:
        return min(self.max_s, self.initial_s * 2 ** min(attempt, 32))


def supervise(name: str, command: list[str], policy: RestartPolicy = RestartPolicy()) -> int:
    """Runs ``command`` until it exits cleanly (0), with a usage error (2), or this process gets SIGTERM.

    Any other end (non-zero exit, SIGKILL, a crash) starts it again after the
    policy's delay, except a first run that fails within ``START_GRACE_S``:
    that is a setup error ``start_detached`` reports instead of looping on it.
    """
    stopping = False
    child: subprocess.Popen | None = None

    def _term(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        if child is not None and child.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                child.send_signal(signum)

    signal.signal(signal.SIGTERM, _term)
    signal.signal(signal.SIGINT, _term)
    attempt, restarts = 0, 0
    while True:
        began = time.monotonic()
        child = subprocess.Popen(command, stdin=subprocess.DEVNULL)
        path = _record_path(name)
        with contextlib.suppress(OSError, ValueError, TypeError):
            record = ServiceRecord(**json.loads(path.read_text()))
            record.child_pid, record.restarts = child.pid, restarts
            _write_record(record)
        rc = child.wait()
        ran_s = time.monotonic() - began
        if stopping or rc in (0, USAGE_EXIT) or (restarts == 0 and ran_s < START_GRACE_S):
            return rc if rc >= 0 else 128 - rc
        if ran_s >= policy.reset_after_s:
            attempt = 0
        delay = policy.delay(attempt)
        attempt += 1
        restarts += 1
        print(f"tocsin supervisor: {name} exited with {rc}; restart {restarts} in {delay:g} s", flush=True)
        deadline = time.monotonic() + delay
        while not stopping and time.monotonic() < deadline:
            time.sleep(0.1)
        if stopping:
            return 0


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) < 3 or args[1] != "--":
        print("usage: python -m tocsin.app.supervisor NAME -- COMMAND...", file=sys.stderr)
        return USAGE_EXIT
    return supervise(args[0], args[2:])


if __name__ == "__main__":
    sys.exit(main())
