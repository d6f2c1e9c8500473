# Sourced by hack/test.sh and hack/demo.sh: make (or reuse) the project's Python environment.
# The venv lives outside the repo, keyed by pyproject.toml and this checkout's path, so a second run
# reuses it; pip's own cache (built llama-cpp-python wheel included) makes a new one quick.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export EDGESPEC_CACHE="${EDGESPEC_CACHE:-$HOME/.cache/edgespec}"
PY="${PYTHON:-python3}"
key="$( (cat "$ROOT/pyproject.toml"; echo "$ROOT") | sha256sum | cut -c1-16)"
VENV="$EDGESPEC_CACHE/venvs/$key"
if [ ! -f "$VENV/.complete" ]; then
  echo "==> creating the Python environment in $VENV (first run: llama-cpp-python compiles, ~5 min)"
  rm -rf "$VENV"
  "$PY" -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --upgrade pip
  "$VENV/bin/pip" install --quiet --progress-bar off -e "$ROOT[dev]"
  touch "$VENV/.complete"
else
  echo "==> reusing the Python environment $VENV"
fi
export PATH="$VENV/bin:$PATH"
export PYTHONPATH="$ROOT/hack${PYTHONPATH:+:$PYTHONPATH}"
cd "$ROOT"
