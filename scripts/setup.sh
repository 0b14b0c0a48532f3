#!/usr/bin/env bash
# Create .venv (if needed) and install gradlab with everything the book and tests need.
# Idempotent: a second run only checks that the requirements are met.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
VPY=.venv/bin/python
stamp=.venv/.gradlab-setup
want="$(cat requirements.txt pyproject.toml | sha256sum | cut -d' ' -f1)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
$VPY -m pip install --quiet --upgrade pip
# Install torch first: on machines that ship a local CPU wheel of torch 2.13.0 this
# avoids pulling a multi-GB CUDA build from the registry. Elsewhere any torch>=2.1 will do.
if ! $VPY -c "import torch" 2>/dev/null; then
  $VPY -m pip install --quiet "torch==2.13.0" || $VPY -m pip install --quiet "torch>=2.1"
fi
$VPY -m pip install --quiet -r requirements.txt
$VPY -m pip install --quiet --no-deps -e .
$VPY -m ipykernel install --sys-prefix --name python3 >/dev/null
echo "$want" > "$stamp"
