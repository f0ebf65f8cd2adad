# Sourced by scripts/run and scripts/test: creates .venv on first use and keeps it in step
# with requirements.lock (the pinned versions a fresh machine must get).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PYTHON="${PYTHON:-python3}"
VENV="${BILLING_VENV:-$ROOT/.venv}"
if [ ! -x "$VENV/bin/python" ]; then
    "$PYTHON" -m venv "$VENV"
fi
stamp="$VENV/.installed-lock"
if [ ! -f "$stamp" ] || ! cmp -s requirements.lock "$stamp" || [ pyproject.toml -nt "$stamp" ]; then
    log="$VENV/install.log"
    echo "installing pinned dependencies into $VENV (log: $log)" >&2
    if ! { "$VENV/bin/python" -m pip install --upgrade pip \
            && "$VENV/bin/python" -m pip install -r requirements.lock \
            && "$VENV/bin/python" -m pip install --no-deps -e .; } >"$log" 2>&1; then
        tail -n 40 "$log" >&2
        echo "installation failed; full log in $log" >&2
        exit 1
    fi
    cp requirements.lock "$stamp"
fi
export PATH="$VENV/bin:$PATH"
