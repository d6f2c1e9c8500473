#!/bin/sh
# The install steps of the project's Dockerfiles, in two modes:
#   venv-install.sh wheels EXTRA    build stage: put the wheels the image needs into /build/wheelhouse
#   venv-install.sh install EXTRA   final stage: create /opt/venv and install the image's lock and the
#                                   project from /build/wheelhouse and /wheels, offline
# With wheels in /wheels (`--build-context wheels=DIR`), the build stage only builds the project's
# own wheel from them: no index, no compiler. Without, it builds every wheel from the package index,
# after installing BUILD_PACKAGES with apt-get (compilers for llama-cpp-python; CMAKE_ARGS reaches
# the llama.cpp build). A CA bundle given as `--secret id=cacert,src=FILE` (a TLS-inspecting proxy)
# is used by pip and never stored in the image. The final stage installs RUNTIME_PACKAGES that the
# base lacks (each as LIBRARY=PACKAGE, e.g. libgomp.so.1=libgomp1) and python3-venv if needed.
set -eu
mode="$1"
extra="$2"
export PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore
if [ -f /run/secrets/cacert ]; then
  export PIP_CERT=/run/secrets/cacert SSL_CERT_FILE=/run/secrets/cacert
fi

apt_install() {
  if ! command -v apt-get >/dev/null; then
    echo "venv-install: this base lacks $* and has no apt-get; use a base that has them" >&2
    exit 1
  fi
  apt-get update
  apt-get install -y --no-install-recommends "$@"
  rm -rf /var/lib/apt/lists/*
}

have_wheels() { ls /wheels/*.whl >/dev/null 2>&1; }

# The image's lock (COPY'd to /build/requirements.lock): exact versions with hashes, a subset of the
# lock CI installs (python -m edgespec_dev.locks). Every distribution installs --require-hashes but
# llama-cpp-python, whose wheel is compiled (here, from the lock's hash-checked sdist, or by
# hack/env.sh and given in /wheels) and installed by the version the lock pins (docs/images.md).
LOCK=/build/requirements.lock
[ -f "$LOCK" ] || { echo "venv-install: no $LOCK (the Dockerfile copies the image's lock there)" >&2; exit 1; }
work=$(mktemp -d)  # nothing of this stays in the image
trap 'rm -rf "$work"' EXIT
llama_pin=$(grep -o "^llama-cpp-python==[^ ]*" "$LOCK" || true)
grep -v "^llama-cpp-python==" "$LOCK" > "$work/hashed.lock"
grep -E "^(setuptools|wheel)==" "$LOCK" > "$work/backend.lock"

build_project_wheel() {  # the build backend from the lock, then the project's wheel, no isolation
  python3 -m venv /tmp/pip
  /tmp/pip/bin/pip install --require-hashes --no-deps "$@" -r "$work/backend.lock"
  /tmp/pip/bin/pip wheel --no-deps --no-build-isolation --no-index --wheel-dir /build/wheelhouse .
}

case "$mode" in
wheels)
  mkdir -p /build/wheelhouse
  if have_wheels; then
    echo "venv-install: building the project's wheel offline; dependencies from $(ls /wheels/*.whl | wc -l) given wheels"
    build_project_wheel --no-index --find-links /wheels
  else
    if [ -n "${BUILD_PACKAGES:-}" ]; then
      # shellcheck disable=SC2086 # a list of package names
      apt_install $BUILD_PACKAGES
    fi
    echo "venv-install: building the wheels of $LOCK from the package index, hash-checked"
    build_project_wheel
    /tmp/pip/bin/pip wheel --require-hashes --no-deps --wheel-dir /build/wheelhouse -r "$LOCK"
  fi
  ;;
install)
  missing=""
  python3 -c "import ensurepip, venv" 2>/dev/null || missing="python3-venv"
  for pair in ${RUNTIME_PACKAGES:-}; do
    ldconfig -p | grep -q "${pair%%=*} " || missing="$missing ${pair#*=}"
  done
  if [ -n "$missing" ]; then
    # shellcheck disable=SC2086 # a list of package names
    apt_install $missing
  fi
  echo "venv-install: installing $LOCK and edgespec[$extra] into /opt/venv, offline"
  python3 -m venv /opt/venv
  offline="--no-index --find-links /build/wheelhouse --find-links /wheels"
  # shellcheck disable=SC2086 # options
  /opt/venv/bin/pip install $offline --require-hashes --no-deps -r "$work/hashed.lock"
  if [ -n "$llama_pin" ]; then
    # shellcheck disable=SC2086 # options
    /opt/venv/bin/pip install $offline --no-deps "$llama_pin"
  fi
  # shellcheck disable=SC2086 # options
  /opt/venv/bin/pip install $offline --no-deps "edgespec[$extra]"
  /opt/venv/bin/pip check
  ;;
*)
  echo "usage: venv-install.sh wheels|install EXTRA" >&2
  exit 2
  ;;
esac
