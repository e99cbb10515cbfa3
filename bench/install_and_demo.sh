#!/usr/bin/env bash
# Measures the README's quick start from a fresh clone: each install step's time, the venv's size, the demo's time
# and result, then the ".[ray]" extra (time and size added). Prints one "step seconds" line per step.
#
#   bench/install_and_demo.sh [OUT_DIR]      # default: a temporary folder; the clone and venv go there
#
# TORCH_INSTALL overrides the torch step (default: the README's CPU command).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-$(mktemp -d)}
torch_install=${TORCH_INSTALL:-"pip install -q torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu"}

step() {  # step NAME COMMAND...: run it, print its wall time
  local name=$1 start end
  shift
  start=$(date +%s.%N)
  "$@"
  end=$(date +%s.%N)
  printf '%-22s %7.1f s\n' "$name" "$(echo "$end - $start" | bc)"
}

rm -rf "$out/clone"
git clone -q "$repo" "$out/clone"
cd "$out/clone"
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(date -u +%F)"
echo "commit: $(git rev-parse --short HEAD)"
step venv python3 -m venv .venv
. .venv/bin/activate
step torch bash -c "$torch_install"
step "pip install -e ." pip install -q -e .
step "recbole --no-deps" pip install -q --no-deps recbole==1.2.1
echo "venv size: $(du -sm .venv | cut -f1) MB (torch $(du -sm .venv/lib/python3*/site-packages/torch | cut -f1) MB)"
step demo bash -c "python run_recbole_srma.py > demo.log 2>&1"
sed 's/\x1b\[[0-9;]*m//g' demo.log | grep -A8 "SRMA on ml-100k:" | sed 's/^/  /'
step "pip install .[ray]" pip install -q -e ".[ray]"
echo "venv size with ray: $(du -sm .venv | cut -f1) MB; $(pip list 2>/dev/null | grep -E '^(ray|setuptools) ' | xargs)"
