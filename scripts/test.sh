#!/usr/bin/env bash
# Install everything (a no-op when done) and run the tests.
#   bash scripts/test.sh [pytest arguments]          the default tier: every module, in minutes
#   bash scripts/test.sh --full [pytest arguments]   every test (what CI runs)
# Two pytest-xdist workers, one per core of the 2-core machines the tiers are sized for (most
# tests run one thread at a time: graph building, process start-ups); `-n 0` runs in this process.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
tier=(-m "not full")
if [ "${1:-}" = "--full" ]; then
    tier=()
    shift
fi
exec .venv/bin/python -m pytest -q -p no:cacheprovider -n 2 "${tier[@]}" "$@"
