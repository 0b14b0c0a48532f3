#!/usr/bin/env bash
# Create .venv (if needed) and install gradlab with everything the book and the tests need.
# Idempotent: once the requirements are installed, a second run returns at once.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv with $($PY --version)"
  "$PY" -m venv .venv
fi
VPY=.venv/bin/python
stamp=.venv/.gradlab-setup
want="$(cat requirements.txt pyproject.toml | sha256sum | cut -d' ' -f1)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
log=.venv/setup.log
: > "$log"
pipi() {  # pip install, its chatter kept in the log and shown only on failure
  if ! $VPY -m pip install --disable-pip-version-check "$@" >>"$log" 2>&1; then
    tail -n 40 "$log"; echo "setup: pip install $* failed (full log: $log)" >&2; return 1
  fi
}
echo "setup: installing requirements into .venv (first run takes a few minutes)"
pipi --upgrade pip
# torch first: where a local CPU wheel of torch 2.13.0 is on offer this avoids pulling a
# multi-GB CUDA build from the registry; elsewhere any torch>=2.1 will do.
if ! $VPY -c "import torch" 2>/dev/null; then
  pipi "torch==2.13.0" || pipi "torch>=2.1"
fi
pipi -r requirements.txt
pipi --no-deps -e .
$VPY -m ipykernel install --sys-prefix --name python3 >>"$log" 2>&1
echo "$want" > "$stamp"
echo "setup: done"
