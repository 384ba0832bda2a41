"""Experiments as stages that several one-thread worker processes share: each stage writes
``<work>/stages/<name>.json`` when done and is skipped when that file exists (an interrupted
campaign continues), and a worker claims the next stage whose inputs are done with a lock file
(``<work>/locks/<name>.lock``, holding its pid; a dead worker's lock is taken over)."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import time
from pathlib import Path

#: Run the command line in one thread: ``stablemd`` itself adapts its torch threads to the free
#: cores (``adapt_threads_to_load``), which would give a run alone on the machine two threads.
ONE_THREAD_CLI = (
    "import sys, torch, numba; torch.set_num_threads(1); numba.set_num_threads(1)\n"
    "from stablemd.core.runtime import tune_memory_allocator; tune_memory_allocator()\n"
    "from stablemd.cli.main import app\n"
    "app(args=sys.argv[1:], prog_name='stablemd', standalone_mode=True)\n"
)


def one_thread() -> None:
    import numba
    import torch

    torch.set_num_threads(1)
    numba.set_num_threads(1)


def cli(args: list[str], log: Path) -> float:
    """Run ``stablemd ARGS`` in one thread, output to ``log``; wall seconds."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1"}
    started = time.perf_counter()
    with open(log, "a") as handle:
        subprocess.run(
            [sys.executable, "-c", ONE_THREAD_CLI, *map(str, args)],
            stdout=handle, stderr=subprocess.STDOUT, env=env, check=True,
        )  # fmt: skip
    return time.perf_counter() - started


class Stage:
    """``run(work, *args)`` returns the stage's JSON record; it starts once every stage named
    in ``needs`` is done."""

    def __init__(self, name, needs, run, args=()):
        self.name, self.needs, self.run, self.args = name, tuple(needs), run, args


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def campaign_arguments(description: str, default_work: Path) -> argparse.Namespace:
    """The command line every campaign script shares: ``--work`` (resolved and made),
    ``--stages`` (as ``words``: a list, or None), ``--until`` and ``--collect``."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--work", type=Path, default=default_work)
    parser.add_argument("--stages", help="comma-separated words: run matching stages only")
    parser.add_argument("--until", help="HH:MM UTC: take no new stage after this time")
    parser.add_argument("--collect", action="store_true")
    args = parser.parse_args()
    args.work = args.work.resolve()
    args.work.mkdir(parents=True, exist_ok=True)
    args.words = args.stages.split(",") if args.stages else None
    return args


def claim(work: Path, name: str) -> bool:
    """Take stage ``name`` for this process; False when a live worker holds it."""
    lock = work / "locks" / f"{name}.lock"
    lock.parent.mkdir(exist_ok=True)
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            try:
                pid = int(lock.read_text() or 0)
            except (OSError, ValueError):
                return False
            if pid and _alive(pid):
                return False
            lock.unlink(missing_ok=True)  # left by a dead worker
            continue
        os.write(fd, str(os.getpid()).encode())
        os.close(fd)
        return True
    return False


def work_loop(work: Path, plan: list[Stage], words: list[str] | None, until: str | None) -> None:
    """Run stages of ``plan`` (only those whose name holds one of ``words``, if given) until
    none is left, taking no new one after ``until`` (HH:MM UTC). A failed stage is recorded
    with its error and the others go on."""
    one_thread()
    done_dir = work / "stages"
    done_dir.mkdir(parents=True, exist_ok=True)
    while True:
        if until and dt.datetime.now(dt.UTC).strftime("%H:%M") >= until:
            print(f"[{os.getpid()}] past {until} UTC: no new stage", flush=True)
            return
        pending = [s for s in plan if not (done_dir / f"{s.name}.json").exists()]
        if words:
            pending = [s for s in pending if any(w in s.name for w in words)]
        if not pending:
            print(f"[{os.getpid()}] nothing left", flush=True)
            return
        ready = [s for s in pending if all((done_dir / f"{n}.json").exists() for n in s.needs)]
        stage = next((s for s in ready if claim(work, s.name)), None)
        if stage is None:
            time.sleep(5)
            continue
        stamp = dt.datetime.now(dt.UTC).strftime("%H:%M:%S")
        print(f"[{os.getpid()}] {stamp} {stage.name} ...", flush=True)
        started = time.perf_counter()
        try:
            result = stage.run(work, *stage.args)
        except Exception as exc:  # record and go on: one failed stage must not stop the rest
            print(f"[{os.getpid()}] {stage.name} FAILED: {exc!r}", flush=True)
            result = {"failure": repr(exc)}
        result["stage_wall_s"] = time.perf_counter() - started
        result["finished_utc"] = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        (done_dir / f"{stage.name}.json").write_text(json.dumps(result, indent=1))
        (work / "locks" / f"{stage.name}.lock").unlink(missing_ok=True)
        print(f"[{os.getpid()}] {stage.name} done in {result['stage_wall_s']:.0f} s", flush=True)


def recorded_stages(work: Path, logs: Path) -> dict:
    """Every recorded stage by name. A failed command's record gets the last error line of its
    log (``logs/<stage>.log``) instead of its argv, and no failure names ``work``'s path."""
    results = {p.stem: json.loads(p.read_text()) for p in sorted((work / "stages").glob("*.json"))}
    for name, row in results.items():
        log = logs / f"{name}.log"
        if "CalledProcessError" in row.get("failure", "") and log.exists():
            errors = [ln for ln in log.read_text().splitlines() if "Error" in ln]
            row["failure"] = errors[-1].strip() if errors else row["failure"]
        if "failure" in row:
            row["failure"] = row["failure"].replace(str(work) + "/", "")
    return results


def stability_rows(out: Path) -> dict:
    """The rows of each model of a ``stablemd stability --out OUT`` run (its settings left out)."""
    summary = json.loads((out / "summary.json").read_text())
    return {k: v for k, v in summary.items() if k != "settings"}
