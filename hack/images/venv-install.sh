#!/bin/sh
# Used by the project's Dockerfiles (build stage only): install the project with one extra into the
# virtual environment /opt/venv, which the final stage copies.
#   venv-install.sh EXTRA
# With wheels in /wheels (`--build-context wheels=DIR`), pip installs offline from them: no index,
# no compiler. Without, pip uses the index; BUILD_PACKAGES (compilers for llama-cpp-python) are
# installed first with apt-get, and CMAKE_ARGS reaches the llama.cpp build.
# A CA bundle given as `--secret id=cacert,src=FILE` (a TLS-inspecting proxy) is used by pip and
# never stored in the image.
set -eu
extra="$1"
if [ -f /run/secrets/cacert ]; then
  export PIP_CERT=/run/secrets/cacert SSL_CERT_FILE=/run/secrets/cacert
fi
export PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore
if ls /wheels/*.whl >/dev/null 2>&1; then
  echo "venv-install: installing .[$extra] offline from $(ls /wheels/*.whl | wc -l) wheels in /wheels"
  python3 -m venv /opt/venv
  /opt/venv/bin/pip install --no-index --find-links /wheels ".[$extra]"
else
  if [ -n "${BUILD_PACKAGES:-}" ]; then
    if ! command -v apt-get >/dev/null; then
      echo "venv-install: this base has no apt-get for $BUILD_PACKAGES; pass --build-context wheels=DIR" >&2
      exit 1
    fi
    apt-get update
    apt-get install -y --no-install-recommends $BUILD_PACKAGES
    rm -rf /var/lib/apt/lists/*
  fi
  echo "venv-install: installing .[$extra] from the package index"
  python3 -m venv /opt/venv
  /opt/venv/bin/pip install ".[$extra]"
fi
