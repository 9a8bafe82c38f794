"""Run every benchmark in bench/ (each prints its figures next to its goals).

    .venv/bin/python -m bench                  # all
    .venv/bin/python -m bench spine web        # some
    .venv/bin/python -m bench --short          # the short set (< 1 minute; bench/short.py)
    .venv/bin/python -m bench --short --check  # ... and exit 1 when a figure is past its goal by more
                                               # than bench.short.MARGIN (what scripts/test.sh runs)
"""

from __future__ import annotations

import subprocess
import sys
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

        return short(check="--check" in flags)
    names = sorted(p.stem.removeprefix("bench_") for p in HERE.glob("bench_*.py"))
    chosen = argv or names
    failed = 0
    for name in chosen:
        if name not in names:
            print(f"unknown benchmark {name!r}; have: {', '.join(names)}", file=sys.stderr)
            return 2
        print(f"\n===== bench_{name} =====", flush=True)
        failed |= subprocess.call([sys.executable, "-m", f"bench.bench_{name}"], cwd=HERE.parent) != 0
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
