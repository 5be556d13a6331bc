#!/usr/bin/env bash
# Install everything (a no-op when done), then run the demo: build the digits data set, train a
# small ResNet with denoising blocks clean and with PGD, evaluate both, print and save the table.
#   bash scripts/demo.sh [--out DIR] [tools/demo.py options]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m tools.demo "$@"
