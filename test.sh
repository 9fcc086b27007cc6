#!/usr/bin/env bash
# Installs everything (idempotent) and runs the test suite.
set -euo pipefail
cd "$(dirname "$0")"
. scripts/setup.sh
# pytest exits 5 when no test ran: that counts as a failure here too.
python -m pytest -q -p no:cacheprovider tests "$@"
