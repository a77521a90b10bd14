#!/usr/bin/env bash
# Makes the pinned Python environment the reference scripts run in (requirements.txt beside this
# file) and prints its interpreter. The folder is target/pyenv, or $BATON_PYENV; the scripts'
# usage lines run "$(tests/reference/setup.sh)" so no machine's own paths are written anywhere.
set -euo pipefail
cd "$(dirname "$0")/../.."
VENV=${BATON_PYENV:-target/pyenv}
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV" >&2
if ! "$VENV/bin/python" -c "import torch, transformers, xrfm" 2>/dev/null; then
    "$VENV/bin/pip" install -q -r tests/reference/requirements.txt >&2
fi
echo "$VENV/bin/python"
