#!/usr/bin/env bash
# Create a virtual environment and install everything the project needs, Horovod included.
#   bash scripts/setup.sh            # into ./.venv
#   VENV=/opt/fd bash scripts/setup.sh
# Re-running is cheap: each step is skipped when it is already satisfied.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3}
HOROVOD_VERSION=0.28.1

if [ ! -x "$VENV/bin/python" ]; then
    echo "[setup] creating virtual environment in $VENV"
    "$PYTHON" -m venv "$VENV"
fi
PIP="$VENV/bin/pip"
"$PIP" install --quiet --upgrade "pip>=24" wheel "setuptools<70" packaging

echo "[setup] installing requirements.txt, requirements-test.txt and requirements-export.txt"
"$PIP" install --quiet -r requirements.txt -r requirements-test.txt -r requirements-export.txt

if "$VENV/bin/python" -c "import horovod.tensorflow" 2>/dev/null; then
    echo "[setup] horovod already installed"
else
    # No GPU here: build with Gloo (no MPI needed); horovodrun --gloo runs ranks on one machine.
    # On a GPU machine set HOROVOD_GPU_OPERATIONS=NCCL before running this script.
    echo "[setup] building horovod $HOROVOD_VERSION from source (about 6 minutes on 2 cores)"
    "$PIP" install --quiet "cmake>=3.13,<4"   # CMake 4 refuses Horovod 0.28.1's bundled Gloo
    HOROVOD_WITH_TENSORFLOW=1 HOROVOD_WITH_GLOO=1 HOROVOD_WITHOUT_MPI=1 \
    HOROVOD_WITHOUT_PYTORCH=1 HOROVOD_WITHOUT_MXNET=1 \
    MAKEFLAGS="-j$(nproc)" \
        "$PIP" install --no-build-isolation "horovod[tensorflow]==$HOROVOD_VERSION"
fi
"$VENV/bin/python" -c "import tensorflow as tf, tensorpack, horovod.tensorflow as hvd; print('[setup] ok: tensorflow', tf.__version__, 'tensorpack', tensorpack.__version__, 'horovod', hvd.__version__ if hasattr(hvd, '__version__') else '')"
