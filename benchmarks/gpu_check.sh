#!/usr/bin/env bash
# The prepared GPU check (benchmarks/gpu_check.py): one command, under 10 minutes on one GPU; writes
# gpu_check.md to $OUT (the device tool's folder) or to the current directory. Extra arguments pass on
# (--dry-run: the CPU, tiny sizes).
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
PYTHON="${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || true
exec "$PYTHON" benchmarks/gpu_check.py "$@"
