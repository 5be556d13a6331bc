#!/usr/bin/env bash
# Our standard AutoAttack against its authors' implementation (tools/autoattack_oracle.py) on the demo's adversarially
# trained model and 120 validation digits, epsilon 32/255. torch (CPU) and the authors' package go into their own
# environment, .venv-oracle, which also sees .venv's packages (a .pth file): the project's .venv stays as CI has it.
# Trains the demo models first when demo_out/ has none (bash scripts/demo.sh). About 45 minutes on 2 cores.
#   bash scripts/autoattack_oracle.sh [--images N] [--out DIR] [more tools.autoattack_oracle flags]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
if [ ! -x .venv-oracle/bin/python ]; then
    python3.11 -m venv .venv-oracle
fi
site=$(.venv/bin/python -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
oracle_site=$(.venv-oracle/bin/python -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
echo "$site" > "$oracle_site/project-venv.pth"
echo "[oracle] installing requirements-oracle.txt into .venv-oracle (torch CPU, pyautoattack)"
.venv-oracle/bin/pip install --quiet -r requirements-oracle.txt
if [ ! -f demo_out/runs/adversarial/checkpoint ]; then
    echo "[oracle] no demo model in demo_out/runs/adversarial: training it (bash scripts/demo.sh)"
    bash scripts/demo.sh
fi
arch=$(.venv/bin/python -c "from tools.demo import DEMO_ARCH; print(' '.join(DEMO_ARCH))")
# shellcheck disable=SC2086
exec .venv-oracle/bin/python -m tools.autoattack_oracle --data demo_out/data --load demo_out/runs/adversarial \
    --images 120 --epsilon 32 --out autoattack_oracle_out $arch "$@"
