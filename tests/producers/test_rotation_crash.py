"""Rotation and crashes: 200,000 numbered lines, rename rotation every 20,000, one copytruncate, two SIGKILLs.

A writer thread appends numbered JSON lines to app.log and rotates it the way
logrotate does (app.log.N -> app.log.N+1, app.log -> app.log.1), once with
copytruncate instead of a rename. ``tocsin ship app.log --state`` runs as a
subprocess and is killed with SIGKILL twice while the writer goes on (so
rotations also happen while it is down), then restarted. Afterwards the logs
topic must hold every line number; the test prints how many came twice (only
lines sent but not yet checkpointed at a kill may).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.producers.shiputil import env_for, numbered, seq_counts, shipped, write_config

TOTAL = 200_000
ROTATE_EVERY = 20_000
COPYTRUNCATE_AT = 100_000  # this rotation copies and truncates instead of renaming
KILL_AT = (50_000, 130_000)
BURST = 400  # lines per write
BURST_PAUSE_S = 0.012  # ~30,000 lines/s


class Writer(threading.Thread):
    def __init__(self, directory: Path) -> None:
        super().__init__(daemon=True)
        self.dir = directory
        self.path = directory / "app.log"
        self.written = 0
        self.rotations = 0
        self.error: BaseException | None = None

    def _shift(self) -> None:
        existing = sorted((int(p.name.rsplit(".", 1)[1]) for p in self.dir.glob("app.log.*")), reverse=True)
        for n in existing:
            os.rename(self.dir / f"app.log.{n}", self.dir / f"app.log.{n + 1}")

    def run(self) -> None:
        try:
            f = open(self.path, "a")  # noqa: SIM115 - reopened at each rotation
            while self.written < TOTAL:
                f.write("".join(numbered(i) for i in range(self.written, self.written + BURST)))
                f.flush()
                self.written += BURST
                if self.written % ROTATE_EVERY == 0 and self.written < TOTAL:
                    self._shift()
                    if self.written == COPYTRUNCATE_AT:
                        shutil.copyfile(self.path, self.dir / "app.log.1")
                        f.truncate(0)
                        f.seek(0)
                    else:
                        f.close()
                        os.rename(self.path, self.dir / "app.log.1")
                        f = open(self.path, "a")  # noqa: SIM115
                    self.rotations += 1
                time.sleep(BURST_PAUSE_S)
            f.close()
        except BaseException as exc:  # reported by the test
            self.error = exc


def _start(config: Path, log: Path, state: Path, env: dict[str, str], out: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "tocsin", "-c", str(config), "ship", str(log), "--service", "shop",
         "--state", str(state)],
        env=env, stdout=subprocess.DEVNULL, stderr=open(out, "ab"),
    )


@pytest.mark.slow
def test_rotation_copytruncate_and_two_sigkills_lose_no_line(tocsin_config, tmp_path):
    logs = tmp_path / "logs"
    logs.mkdir()
    config = write_config(tmp_path, tocsin_config)
    state = tmp_path / "ship.state.json"
    env = env_for(tocsin_config)
    stderr = tmp_path / "shipper.stderr"
    writer = Writer(logs)
    (logs / "app.log").touch()
    proc = _start(config, logs / "app.log", state, env, stderr)
    kills = 0
    try:
        writer.start()
        for at in KILL_AT:
            while writer.written < at and writer.is_alive():
                time.sleep(0.01)
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
            kills += 1
            if state.exists():
                shutil.copyfile(state, tmp_path / f"state.after-kill-{kills}.json")
            time.sleep(1.0)  # stay down while the writer goes on (and rotates)
            proc = _start(config, logs / "app.log", state, env, stderr)
        writer.join(120)
        assert writer.error is None, writer.error
        assert writer.written == TOTAL and writer.rotations == TOTAL // ROTATE_EVERY - 1
        deadline = time.monotonic() + 150
        events = []
        while time.monotonic() < deadline:
            events = shipped(tocsin_config, timeout_s=90)  # until the topic is idle for a while
            if len(seq_counts(events)) >= TOTAL:
                break
            time.sleep(3)
    finally:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(20)
        if proc.poll() is None:
            proc.kill()
    counts = seq_counts(events)
    missing = sorted(set(range(TOTAL)) - set(counts))
    duplicated = sum(c - 1 for c in counts.values() if c > 1)
    print(f"\nrotation+crash: {len(events)} events for {TOTAL} lines, {kills} SIGKILLs, "
          f"{writer.rotations} rotations (1 copytruncate), duplicates: {duplicated}, missing: {len(missing)}")
    by_file = {r: sum(c - 1 for s, c in counts.items() if s // ROTATE_EVERY == r and c > 1)
               for r in range(TOTAL // ROTATE_EVERY)}
    print(f"duplicates per {ROTATE_EVERY}-line file: {by_file}")
    assert kills == 2
    assert not missing, f"{len(missing)} lines lost, first {missing[:10]}; shipper log: " \
                        f"{stderr.read_text()[-3000:]}"
    # Duplicates are only re-sends of unacknowledged lines, so they carry the same event ids.
    ids_by_seq: dict[int, set[str]] = {}
    for _, e in events:
        ids_by_seq.setdefault(int(e["attrs"]["seq"]), set()).add(e["event_id"])
    assert all(len(ids) == 1 for ids in ids_by_seq.values())
