#!/usr/bin/env bash
# Host packages a real kubelet node of the dev cluster needs (Debian/Ubuntu, run as root):
# containerd, runc, the CNI plugins, iptables/nftables (the guard rules and kube-proxy),
# conntrack, busybox-static (the test image) and gcc (the static pause binary).
# Idempotent: installs only what is missing; runs `apt-get update` only when a package has no
# install candidate or a download fails with the cached lists. Quiet, one progress line a step.
# Called by `python -m edgespec_dev.cluster start --real-node`; safe to run by hand.
set -euo pipefail

PACKAGES=(containerd runc containernetworking-plugins iptables nftables conntrack busybox-static gcc libc6-dev)

say() { echo "setup-node: $*" >&2; }

if [[ $(id -u) -ne 0 ]]; then
    say "must run as root (it installs Debian packages); rerun with sudo"
    exit 1
fi
if ! command -v apt-get >/dev/null; then
    say "no apt-get: install these packages with your package manager: ${PACKAGES[*]}"
    exit 1
fi

missing=()
for package in "${PACKAGES[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("$package")
    fi
done
if [[ ${#missing[@]} -eq 0 ]]; then
    say "packages present (${PACKAGES[*]})"
    exit 0
fi

export DEBIAN_FRONTEND=noninteractive
apt_install() {
    # No daemon is started by the packages' maintainer scripts (policy-rc.d answers 101):
    # each cluster runs its own containerd with its own config.
    apt-get install -y -qq --no-install-recommends -o Dpkg::Use-Pty=0 "${missing[@]}" \
        >"$log" 2>&1
}
log=$(mktemp /tmp/edgespec-setup-node.XXXXXX.log)
policy=/usr/sbin/policy-rc.d
created_policy=0
if [[ ! -e $policy ]]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod 755 "$policy" && created_policy=1
fi
trap '[[ $created_policy -eq 1 ]] && rm -f "$policy"' EXIT

needs_update=0
for package in "${missing[@]}"; do
    candidate=$(apt-cache policy "$package" 2>/dev/null | awk '/Candidate:/ {print $2}')
    if [[ -z $candidate || $candidate == "(none)" ]]; then needs_update=1; fi
done
started=$SECONDS
if [[ $needs_update -eq 1 ]]; then
    say "apt-get update (package lists lack: ${missing[*]}) ..."
    apt-get update -qq >"$log" 2>&1 || { say "apt-get update failed; see $log"; tail -5 "$log" >&2; exit 1; }
fi
say "installing ${missing[*]} ..."
if ! apt_install; then
    say "install failed with the cached package lists; apt-get update and retry ..."
    apt-get update -qq >"$log" 2>&1 || { say "apt-get update failed; see $log"; tail -5 "$log" >&2; exit 1; }
    apt_install || { say "apt-get install failed; see $log"; tail -15 "$log" >&2; exit 1; }
fi
# The Debian package enables a system-wide containerd service; this project never uses it.
if command -v systemctl >/dev/null && systemctl is-active --quiet containerd 2>/dev/null; then
    say "note: a system containerd service is running; edgespec clusters use their own"
fi
rm -f "$log"
say "installed ${missing[*]} in $((SECONDS - started))s"
