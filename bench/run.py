"""Run the benchmark suite: ``python bench/run.py [--quick] [NAME ...]``.

Each ``bench/<name>.py`` exposes ``main(out_dir, quick) -> dict`` and writes
``<out_dir>/<name>.json``; this runner calls them in turn (all of them by default).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import time
from pathlib import Path

from stablemd.core.runtime import tune_memory_allocator

HERE = Path(__file__).resolve().parent


#: Modules of bench/ that are helpers, not benchmarks.
HELPERS = {"run", "machine", "stages", "campaign"}


def available() -> list[str]:
    """Benchmarks with ``main(out_dir, quick)``; campaigns of worker processes
    (``bench/campaign.py``) run on their own command line."""
    return sorted(
        p.stem
        for p in HERE.glob("*.py")
        if p.stem not in HELPERS and "\ndef main(" in p.read_text()
    )


def load(name: str):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", HERE / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(HERE))
    spec.loader.exec_module(module)
    return module


def run_as_script(benchmark_main) -> None:
    """``python bench/<name>.py [--quick]``: one benchmark's ``main`` as the runner calls it,
    results in bench/results/ and printed."""
    tune_memory_allocator()  # as the stablemd command does
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    print(json.dumps(benchmark_main(out, "--quick" in sys.argv), indent=1)[:3000])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("names", nargs="*", help=f"benchmarks to run (default all): {available()}")
    parser.add_argument("--quick", action="store_true", help="short runs, for smoke testing")
    parser.add_argument("--out", type=Path, default=HERE / "results", help="JSON directory")
    args = parser.parse_args()
    tune_memory_allocator()  # as the stablemd command does
    args.out.mkdir(parents=True, exist_ok=True)
    for name in args.names or available():
        started = time.perf_counter()
        result = load(name).main(args.out, args.quick)
        print(f"== {name} ({time.perf_counter() - started:.0f} s)")
        print(json.dumps(result, indent=1)[:3000])


if __name__ == "__main__":
    main()
