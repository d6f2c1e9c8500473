# Sourced by hack/test.sh and hack/demo.sh: make (or reuse) the project's Python environment.
# The venv lives outside the repo, keyed by pyproject.toml, the llama.cpp build flags and this
# checkout's path, so a second run reuses it; the llama-cpp-python wheel is compiled once per
# version and flags into $EDGESPEC_CACHE/wheels/ and shared by every venv and image build.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export EDGESPEC_CACHE="${EDGESPEC_CACHE:-$HOME/.cache/edgespec}"
PY="${PYTHON:-python3}"

# llama.cpp's default build is -march=native. That compiles in every instruction the CPU advertises,
# AMX included, and on virtual machines that advertise AMX without supporting it (this CI's kind,
# seen here: the kernel grants the AMX permission, yet the first tile instruction dies with SIGILL)
# every model evaluation crashes, on the host and in the images alike. So: the x86-64-v3 baseline
# (SSE4.2, AVX, AVX2, FMA, F16C, BMI2) plus the AVX-512 extensions /proc/cpuinfo lists, never AMX.
# Override with EDGESPEC_LLAMA_CMAKE_ARGS.
llama_cmake_args() {
  local args="-DGGML_NATIVE=off" flags
  if [ "$(uname -m)" = x86_64 ]; then
    flags=" $(grep -m1 '^flags' /proc/cpuinfo | cut -d: -f2) "
    if [[ $flags == *" avx512f "* && $flags == *" avx512cd "* && $flags == *" avx512vl "* &&
          $flags == *" avx512dq "* && $flags == *" avx512bw "* ]]; then
      args+=" -DGGML_AVX512=on"
      [[ $flags == *" avx512vbmi "* ]] && args+=" -DGGML_AVX512_VBMI=on"
      [[ $flags == *" avx512_vnni "* ]] && args+=" -DGGML_AVX512_VNNI=on"
      [[ $flags == *" avx512_bf16 "* ]] && args+=" -DGGML_AVX512_BF16=on"
    fi
    [[ $flags == *" avx_vnni "* ]] && args+=" -DGGML_AVX_VNNI=on"
  fi
  echo "$args"
}
LLAMA_CMAKE_ARGS="${EDGESPEC_LLAMA_CMAKE_ARGS:-$(llama_cmake_args)}"
# Every Python dependency installs from this lock, exact versions with hashes (`python -m
# edgespec_dev.locks lock` makes it from pyproject.toml; the images install subsets of it).
LOCK="$ROOT/hack/requirements-dev.lock"
LLAMA_PIN="$(grep -o '"llama-cpp-python==[^"]*"' "$ROOT/pyproject.toml" | head -1 | tr -d '"')"
LLAMA_KEY="$(echo "$LLAMA_PIN $LLAMA_CMAKE_ARGS" | sha256sum | cut -c1-12)"
# Where the wheel lives; pip finds it there (PIP_FIND_LINKS) before the PyPI source distribution,
# in this venv and in the image builds' wheelhouse (hack/edgespec_dev/images.py).
export EDGESPEC_LLAMA_WHEELS="$EDGESPEC_CACHE/wheels/llama-$LLAMA_KEY"
if ! ls "$EDGESPEC_LLAMA_WHEELS"/llama_cpp_python-*.whl > /dev/null 2>&1; then
  echo "==> compiling $LLAMA_PIN once ($LLAMA_CMAKE_ARGS; ~5 min on 2 cores) into $EDGESPEC_LLAMA_WHEELS"
  mkdir -p "$EDGESPEC_CACHE/wheels"
  building="$EDGESPEC_LLAMA_WHEELS.$$"
  rm -rf "$building"
  # from the sdist the lock pins, hash-checked: the wheel is as trustworthy as that sdist
  mkdir -p "$building"
  grep "^${LLAMA_PIN}[[:space:]]" "$LOCK" > "$building/llama.req" ||
    { echo "env.sh: $LOCK does not pin $LLAMA_PIN: run python -m edgespec_dev.locks lock" >&2; exit 1; }
  CMAKE_ARGS="$LLAMA_CMAKE_ARGS" "$PY" -m pip wheel --quiet --no-deps --no-cache-dir --require-hashes \
    --wheel-dir "$building" -r "$building/llama.req"
  rm "$building/llama.req"
  rm -rf "$EDGESPEC_LLAMA_WHEELS"
  mv "$building" "$EDGESPEC_LLAMA_WHEELS"
fi
export PIP_FIND_LINKS="$EDGESPEC_LLAMA_WHEELS"

key="$( (cat "$ROOT/pyproject.toml" "$LOCK"; echo "$LLAMA_KEY"; echo "$ROOT") | sha256sum | cut -c1-16)"
VENV="$EDGESPEC_CACHE/venvs/$key"
if [ ! -f "$VENV/.complete" ]; then
  echo "==> creating the Python environment in $VENV"
  rm -rf "$VENV"
  "$PY" -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --upgrade pip
  # Everything but llama-cpp-python --require-hashes from the lock; llama-cpp-python is the wheel
  # compiled above from the lock's hash-checked sdist, by the exact version the lock pins (its own
  # hash depends on the compiler, so no lock can hold it: docs/images.md); then the project itself.
  grep -v "^llama-cpp-python==" "$LOCK" > "$VENV/requirements.lock"
  "$VENV/bin/pip" install --quiet --progress-bar off --require-hashes --no-deps -r "$VENV/requirements.lock"
  "$VENV/bin/pip" install --quiet --no-deps --no-index --find-links "$EDGESPEC_LLAMA_WHEELS" "$LLAMA_PIN"
  "$VENV/bin/pip" install --quiet --no-deps --no-build-isolation -e "$ROOT"
  "$VENV/bin/pip" check
  touch "$VENV/.complete"
else
  echo "==> reusing the Python environment $VENV"
fi
export PATH="$VENV/bin:$PATH"
export PYTHONPATH="$ROOT/hack${PYTHONPATH:+:$PYTHONPATH}"
cd "$ROOT"
