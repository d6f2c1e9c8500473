"""Build and cache the native tools the development cluster needs, from Go modules only.

There is no Docker and no download of release binaries here, so every tool (the Kubernetes
control plane and kubectl, the real node's kubelet and kube-proxy, CoreDNS, etcd, KWOK, Helm,
helm-docs, toxiproxy) is compiled from the small wrapper Go
modules under ``hack/go/`` with ``CGO_ENABLED=0``. The version of each tool is read from the
``require`` line of its wrapper ``go.mod`` (the single place to bump it), and the binary is cached
outside the repo in ``${EDGESPEC_CACHE:-~/.cache/edgespec}/bin/<tool>-<version>/<tool>``. A build
writes to a temporary file and renames it into place under a file lock, so an interrupted or
concurrent build never leaves a broken binary. ``python -m edgespec_dev.tools ensure all`` builds
everything and prints the paths.
"""

from __future__ import annotations

import argparse
import datetime as dt
import fcntl
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

GO_MODULES_DIR = Path(__file__).resolve().parent.parent / "go"


@dataclass(frozen=True)
class ToolSpec:
    """How to build one tool: which wrapper module, which Go package, how its version is stamped."""

    name: str
    module_dir: str
    versioned_module: str
    package: str
    approx_build_minutes: int


TOOLS: dict[str, ToolSpec] = {
    spec.name: spec
    for spec in (
        ToolSpec(
            "kube-apiserver",
            "kubernetes",
            "k8s.io/kubernetes",
            "k8s.io/kubernetes/cmd/kube-apiserver",
            6,
        ),
        ToolSpec(
            "kube-controller-manager",
            "kubernetes",
            "k8s.io/kubernetes",
            "k8s.io/kubernetes/cmd/kube-controller-manager",
            2,
        ),
        ToolSpec(
            "kube-scheduler",
            "kubernetes",
            "k8s.io/kubernetes",
            "k8s.io/kubernetes/cmd/kube-scheduler",
            1,
        ),
        ToolSpec("kubectl", "kubernetes", "k8s.io/kubernetes", "k8s.io/kubernetes/cmd/kubectl", 1),
        # The real node (``cluster start --real-node``): same module and version as the control plane.
        ToolSpec("kubelet", "kubernetes", "k8s.io/kubernetes", "k8s.io/kubernetes/cmd/kubelet", 4),
        ToolSpec("kube-proxy", "kubernetes", "k8s.io/kubernetes", "k8s.io/kubernetes/cmd/kube-proxy", 2),
        ToolSpec("coredns", "coredns", "github.com/coredns/coredns", "github.com/coredns/coredns", 4),
        ToolSpec("etcd", "etcd", "go.etcd.io/etcd/server/v3", "go.etcd.io/etcd/server/v3", 2),
        ToolSpec("kwok", "kwok", "sigs.k8s.io/kwok", "sigs.k8s.io/kwok/cmd/kwok", 2),
        ToolSpec("helm", "helm", "helm.sh/helm/v3", "helm.sh/helm/v3/cmd/helm", 4),
        ToolSpec(
            "helm-docs",
            "helm-docs",
            "github.com/norwoodj/helm-docs",
            "github.com/norwoodj/helm-docs/cmd/helm-docs",
            3,
        ),
        ToolSpec(
            "toxiproxy-server",
            "toxiproxy",
            "github.com/Shopify/toxiproxy/v2",
            "github.com/Shopify/toxiproxy/v2/cmd/server",
            1,
        ),
        ToolSpec(
            "toxiproxy-cli",
            "toxiproxy",
            "github.com/Shopify/toxiproxy/v2",
            "github.com/Shopify/toxiproxy/v2/cmd/cli",
            1,
        ),
    )
}


class ToolBuildError(RuntimeError):
    """A tool could not be built; the message says which command failed and how to retry."""


def cache_dir() -> Path:
    """Root of everything edgespec caches outside the repo (``$EDGESPEC_CACHE``)."""
    configured = os.environ.get("EDGESPEC_CACHE")
    if configured:
        return Path(configured).expanduser()
    return Path.home() / ".cache" / "edgespec"


def tool_version(name: str) -> str:
    """The version of ``name`` pinned in its wrapper module's ``go.mod``."""
    spec = _spec(name)
    go_mod = GO_MODULES_DIR / spec.module_dir / "go.mod"
    pattern = re.compile(rf"^\s*(?:require\s+)?{re.escape(spec.versioned_module)}\s+(v\S+)", re.M)
    match = pattern.search(go_mod.read_text())
    if match is None:
        raise ToolBuildError(f"{go_mod} has no require line for {spec.versioned_module}")
    return match.group(1)


def binary_path(name: str) -> Path:
    """Where the cached binary of ``name`` lives (it may not exist yet)."""
    return cache_dir() / "bin" / f"{name}-{tool_version(name)}" / name


def ensure(name: str) -> Path:
    """Return the path of a working ``name`` binary, building it first if it is not cached."""
    target = binary_path(name)
    if target.is_file() and os.access(target, os.X_OK):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / ".build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another process may be building the same tool
        if not (target.is_file() and os.access(target, os.X_OK)):
            _build(_spec(name), target)
    return target


# The KWOK stages the dev cluster runs: nodes become Ready and keep a Lease heartbeat; pods on
# fake nodes become Running/Ready, Job pods complete, deleted pods go away. They are read from the
# pinned KWOK module itself, so bumping KWOK brings its matching stages (v0.8+ has no defaults).
KWOK_STAGE_FILES = (
    "kustomize/stage/node/fast/node-initialize.yaml",
    "kustomize/stage/node/heartbeat-with-lease/node-heartbeat-with-lease.yaml",
    "kustomize/stage/pod/fast/pod-ready.yaml",
    "kustomize/stage/pod/fast/pod-complete.yaml",
    "kustomize/stage/pod/fast/pod-delete.yaml",
)


def kwok_stages() -> Path:
    """A KWOK config file holding the stages above, cached next to the kwok binary."""
    target = ensure("kwok").parent / "stages.yaml"
    if target.is_file():
        return target
    module_dir = GO_MODULES_DIR / TOOLS["kwok"].module_dir
    result = subprocess.run(
        ["go", "mod", "download", "-json", TOOLS["kwok"].versioned_module],
        cwd=module_dir,
        env={**os.environ, "GOWORK": "off", "GOFLAGS": "-mod=readonly"},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise ToolBuildError(f"`go mod download` of KWOK failed in {module_dir}:\n{result.stderr}")
    source = Path(json.loads(result.stdout)["Dir"])
    documents = [(source / name).read_text().strip() for name in KWOK_STAGE_FILES]
    temp = target.with_suffix(f".{os.getpid()}.tmp")
    temp.write_text("\n---\n".join(documents) + "\n")
    os.replace(temp, target)
    return target


def ensure_all(names: Sequence[str] = ()) -> dict[str, Path]:
    """Ensure several tools (all of them when ``names`` is empty); returns name -> path."""
    return {name: ensure(name) for name in (names or list(TOOLS))}


def _spec(name: str) -> ToolSpec:
    try:
        return TOOLS[name]
    except KeyError:
        known = ", ".join(TOOLS)
        raise ToolBuildError(f"unknown tool {name!r}; known tools: {known}") from None


def _ldflags(spec: ToolSpec, version: str) -> list[str]:
    """Version stamps, so ``/version``, ``kubectl version`` and ``--version`` tell the truth."""
    if spec.module_dir == "kubernetes":
        major, minor = version.lstrip("v").split(".")[:2]
        build_date = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        stamps = {
            "gitVersion": version,
            "gitMajor": major,
            "gitMinor": minor,
            "gitTreeState": "clean",
            "buildDate": build_date,
        }
        return [
            f"-X {package}.{key}={value}"
            for package in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version")
            for key, value in stamps.items()
        ]
    if spec.module_dir == "kwok":
        return [f"-X sigs.k8s.io/kwok/pkg/consts.Version={version}"]
    if spec.module_dir == "helm":
        return [f"-X helm.sh/helm/v3/internal/version.version={version}"]
    if spec.module_dir == "helm-docs":
        return [f"-X main.version={version.lstrip('v')}"]
    if spec.module_dir == "toxiproxy":
        return [f"-X github.com/Shopify/toxiproxy/v2.Version={version.lstrip('v')}"]
    return []


def _build(spec: ToolSpec, target: Path) -> None:
    version = target.parent.name.removeprefix(f"{spec.name}-")
    minutes = spec.approx_build_minutes
    _say(
        f"building {spec.name} {version} (first time, ~{minutes} min on 2 cores "
        "with a cold Go build cache) ..."
    )
    fd, temp_name = tempfile.mkstemp(prefix=f".{spec.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    temp = Path(temp_name)
    command = [
        "go",
        "build",
        "-trimpath",
        "-ldflags",
        " ".join(["-s", "-w", *_ldflags(spec, version)]),
        "-o",
        str(temp),
        spec.package,
    ]
    # GOWORK=off: a go.work elsewhere must not change what we build; GOFLAGS is ours alone.
    env = {**os.environ, "CGO_ENABLED": "0", "GOWORK": "off", "GOFLAGS": "-mod=readonly"}
    started = time.monotonic()
    done = threading.Event()
    heartbeat = threading.Thread(target=_heartbeat, args=(spec.name, started, done), daemon=True)
    heartbeat.start()
    try:
        result = subprocess.run(
            command,
            cwd=GO_MODULES_DIR / spec.module_dir,
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            check=False,
        )
    except FileNotFoundError:
        temp.unlink(missing_ok=True)
        raise ToolBuildError(
            "`go` is not on PATH; install Go >= 1.24 (https://go.dev/doc/install) and retry"
        ) from None
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    finally:
        done.set()
    if result.returncode != 0:
        temp.unlink(missing_ok=True)
        tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-30:])
        raise ToolBuildError(
            f"building {spec.name} failed (exit {result.returncode}) in "
            f"{GO_MODULES_DIR / spec.module_dir}:\n  {' '.join(command)}\n{tail}\n"
            "Check that the Go module proxy is reachable (GOPROXY) and rerun "
            f"`python -m edgespec_dev.tools ensure {spec.name}`."
        )
    temp.chmod(0o755)
    os.replace(temp, target)
    _say(f"built {spec.name} {version} in {time.monotonic() - started:.0f}s -> {target}")


def _heartbeat(name: str, started: float, done: threading.Event) -> None:
    # CI kills jobs that print nothing for long; a line every 30 s also reassures humans.
    while not done.wait(30):
        _say(f"  still building {name} ({time.monotonic() - started:.0f}s) ...")


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m edgespec_dev.tools ensure [all|NAME...]`` and ``... list``."""
    parser = argparse.ArgumentParser(
        prog="python -m edgespec_dev.tools",
        description=(
            "Build (once) and print the paths of the tools the dev cluster uses. Binaries are "
            f"cached in {cache_dir() / 'bin'} (set EDGESPEC_CACHE to move it)."
        ),
    )
    commands = parser.add_subparsers(dest="command", required=True)
    ensure_cmd = commands.add_parser("ensure", help="build if missing, then print each path")
    ensure_cmd.add_argument("names", nargs="*", default=["all"], help=f"'all' or any of: {', '.join(TOOLS)}")
    commands.add_parser("list", help="print each tool, its pinned version and whether it is built")
    args = parser.parse_args(argv)
    if args.command == "list":
        for name in TOOLS:
            path = binary_path(name)
            state = "built" if path.is_file() else "not built"
            print(f"{name:24} {tool_version(name):10} {state:10} {path}")
        return 0
    names: list[str] = [] if "all" in args.names else list(args.names)
    try:
        for name, path in ensure_all(names).items():
            print(f"{name} {path}")
    except ToolBuildError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
