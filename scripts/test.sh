#!/bin/bash
# Every test tier, with lint and type checks. A tier whose needs are missing
# fails here instead of skipping (KDBG_REQUIRE_ALL=1).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="$ROOT/.venv/bin/python"
cd "$ROOT"
echo "== ruff" >&2
"$PY" -m ruff check kdbg tests bench gdb
echo "== mypy" >&2
"$PY" -m mypy
echo "== pytest (unit, kernel, vm)" >&2
export KDBG_REQUIRE_ALL=1
exec "$PY" -m pytest tests "$@"
