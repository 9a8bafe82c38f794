"""Run every benchmark in bench/ (each prints its figures next to its goals).

    .venv/bin/python -m bench                  # all
    .venv/bin/python -m bench spine web        # some
    .venv/bin/python -m bench --short          # the short set (~2 minutes; bench/short.py); it fails
                                               # when a figure is past its goal by more than
                                               # bench.short.MARGIN (what scripts/test.sh runs,
                                               # with --check, which is kept and changes nothing)

Exit status 1 when any benchmark missed a goal or could not measure a figure (bench/goals.py: each
benchmark exits 1 then), 2 for a usage error. NGB_BENCH_GOAL_FACTOR=1000 makes every goal 1000x
harder: then every benchmark must exit 1 (a check of the checks).
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main(argv: list[str]) -> int:
    flags = {a for a in argv if a.startswith("--")}
    argv = [a for a in argv if not a.startswith("--")]
    unknown = flags - {"--short", "--check"}
    if unknown:
        print(f"unknown option(s) {', '.join(sorted(unknown))}; have: --short, --check", file=sys.stderr)
        return 2
    if "--short" in flags:
        if argv:
            print("--short runs its own set; name no benchmarks with it", file=sys.stderr)
            return 2
        from bench.short import main as short

        return short()
    names = sorted(p.stem.removeprefix("bench_") for p in HERE.glob("bench_*.py"))
    chosen = argv or names
    for name in chosen:
        if name not in names:
            print(f"unknown benchmark {name!r}; have: {', '.join(names)}", file=sys.stderr)
            return 2
    results: list[tuple[str, int, float]] = []
    for name in chosen:
        print(f"\n===== bench_{name} =====", flush=True)
        t = time.perf_counter()
        code = subprocess.call([sys.executable, "-m", f"bench.bench_{name}"], cwd=HERE.parent)
        results.append((name, code, time.perf_counter() - t))
    print("\n===== summary =====")
    for name, code, took in results:
        verdict = "OK" if code == 0 else f"FAILED (exit {code}: a goal missed or a figure not measured)"
        print(f"bench_{name:<12} {took:6.0f} s   {verdict}")
    return 1 if any(code for _, code, _ in results) else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
