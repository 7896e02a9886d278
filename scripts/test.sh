#!/usr/bin/env bash
# Set up and run the whole test suite (what CI runs). Extra arguments go to pytest.
#   --stress   keep one CPU core busy while the suite runs (the suite must pass on a busy machine)
set -euo pipefail
cd "$(dirname "$0")/.."
stress=0
if [ "${1:-}" = "--stress" ]; then
  stress=1
  shift
fi
bash scripts/setup.sh --test
burner=""
if [ "$stress" = 1 ]; then
  # A pure-Python spin loop: one core at 100 % for the whole run, stopped however the run ends.
  .venv/bin/python -c 'while True: pass' &
  burner=$!
  stop_burner() { kill "$burner" 2>/dev/null || true; wait "$burner" 2>/dev/null || true; }
  trap stop_burner EXIT
  trap 'stop_burner; exit 130' INT
  trap 'stop_burner; exit 143' TERM
  echo "test.sh: --stress: process $burner keeps one core busy" >&2
fi
set +e
.venv/bin/python -m pytest -n 2 --dist loadfile -q "$@"
rc=$?
set -e
if [ $rc -eq 5 ]; then
  echo "test.sh: pytest collected no tests" >&2
  exit 1
fi
exit $rc
