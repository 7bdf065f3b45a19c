#!/usr/bin/env bash
# Run by Snakemake inside the new environment, from the working directory (the repository root): the
# landmark detectors, whose declared dependencies would replace the pinned torch (requirements-nodeps.txt).
set -euo pipefail
python -m pip install --no-deps -r requirements-nodeps.txt
