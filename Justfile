# Shortcuts for developers who have `just`; the README's two scripts need nothing but bash.

# run the daemon (installs what is missing, builds the agent image)
run *ARGS:
    ./scripts/run.sh {{ARGS}}

# the whole test suite (what CI runs)
test *ARGS:
    ./scripts/test.sh {{ARGS}}

# fast tests only: no Docker, no browser
quick:
    .venv/bin/python -m pytest -q -m "not docker and not slow and not browser"

lint:
    .venv/bin/ruff check .
    .venv/bin/mypy
    .venv/bin/vulture
    .venv/bin/lint-imports --no-cache

# benchmarks: figures printed next to their goals
bench:
    .venv/bin/python -m bench

image:
    .venv/bin/python -m ngb.sandbox.image --force
