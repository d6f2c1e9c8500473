"""checkov, the peer scanner, over the rendered chart and every child the builders make for the samples.

checkov (PyPI) comes with a dependency tree the project does not want in its own venv (every
engineer's venv would be rebuilt, and its pins fight the project's), so it gets its own venv:
``${EDGESPEC_CACHE:-~/.cache/edgespec}/checkov-venvs/<version>-py<major.minor>``, built once under a
file lock (about 2 min on 2 cores) with a ``.complete`` marker written last, like the vLLM tier's.

``python -m edgespec_dev.checkov`` renders the manifests into a temporary directory, scans them, and
prints the failed checks (``--json`` for the raw list). ``tests/chart/test_checkov.py`` runs the same
in ``make test`` and holds every remaining finding to the skip list ``hack/checkov-skips.txt``, each
with its reason (also in docs/reliability.md).
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
CHECKOV_VERSION = "3.3.30"
SKIPS = ROOT / "hack" / "checkov-skips.txt"
KUBE_VERSION = "1.34.0"


def _say(message: str) -> None:
    print(f"[checkov] {message}", file=sys.stderr, flush=True)


def venv_dir() -> Path:
    cache = Path(os.environ.get("EDGESPEC_CACHE", str(Path.home() / ".cache" / "edgespec")))
    python = f"py{sys.version_info.major}.{sys.version_info.minor}"
    return cache / "checkov-venvs" / f"{CHECKOV_VERSION}-{python}"


def ensure() -> Path:
    """The python of checkov's venv, built once (idempotent, file-locked)."""
    venv = venv_dir()
    python = venv / "bin" / "python"
    if (venv / ".complete").exists():
        return python
    venv.parent.mkdir(parents=True, exist_ok=True)
    with open(venv.parent / f".{venv.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another run may be building it
        if (venv / ".complete").exists():
            return python
        shutil.rmtree(venv, ignore_errors=True)
        _say(f"building {venv} (checkov=={CHECKOV_VERSION}, about 2 min)")
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run(
            [
                str(python),
                "-m",
                "pip",
                "install",
                "--quiet",
                "--progress-bar",
                "off",
                f"checkov=={CHECKOV_VERSION}",
            ],
            check=True,
        )
        (venv / ".complete").touch()
    return python


def render_chart(directory: Path) -> Path:
    """``helm template`` of the chart with its default values, into ``directory/chart.yaml``."""
    from edgespec_dev import tools

    result = subprocess.run(
        [str(tools.ensure("helm")), "template", "edgespec", str(ROOT / "charts" / "edgespec"),
         "--namespace", "edgespec-system", "--kube-version", KUBE_VERSION],
        capture_output=True, text=True, check=True, timeout=120,
    )  # fmt: skip
    path = directory / "chart.yaml"
    path.write_text(result.stdout)
    return path


def sample_children() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """Every child the operator's own path builds for each sample, with a selection for every class.

    ``plan.desired_children`` with the chart's defaults (node model cache on, telemetry on), every
    class selected (its first draft and quantisation, the smallest K) and one profiling Job per class.
    """
    from edgespec.api.deployment import (
        DeviceClassSelection,
        DeviceClassStatus,
        SpeculativeDeploymentSpec,
        SpeculativeDeploymentStatus,
    )
    from edgespec.builders import ModelCache, Owner, Telemetry, WorkloadImages
    from edgespec.plan import ProfilingJob, desired_children

    images = WorkloadImages(edge="ghcr.io/edgespec/edge:0.1.0", verifier="ghcr.io/edgespec/verifier:0.1.0",
                            vllm="ghcr.io/edgespec/verifier-vllm:0.1.0")  # fmt: skip
    for path in sorted((ROOT / "samples").glob("speculativedeployment-*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if not doc or doc.get("kind") != "SpeculativeDeployment":
                continue
            spec = SpeculativeDeploymentSpec.model_validate(doc["spec"])
            draft = spec.drafts[0]
            quantization = draft.quantizations[0].quantization
            status = SpeculativeDeploymentStatus(
                device_classes=[
                    DeviceClassStatus(
                        name=c.name,
                        nodes=1,
                        selection=DeviceClassSelection(
                            draft_model=draft.name,
                            quantization=quantization,
                            k=spec.speculative_length.min,
                            predicted_goodput_tokens_per_s=1.0,
                            predicted_tokens_per_usd=1.0,
                            predicted_joules_per_token=1.0,
                        ),
                    )
                    for c in spec.device_classes
                ]
            )
            owner = Owner(
                name=doc["metadata"]["name"], namespace="team-a", uid="00000000-0000-0000-0000-000000000001"
            )
            jobs = [
                ProfilingJob(
                    key=(c.name, draft.name, draft.quantizations[0].quantization), node_name="node-0"
                )
                for c in spec.device_classes
            ]
            yield (
                path.name,
                desired_children(
                    spec=spec,
                    owner=owner,
                    images=images,
                    token="t0ken",
                    status=status,
                    profiling_jobs=jobs,
                    telemetry=Telemetry(url="http://edgespec-metrics.edgespec-system.svc:8080/v1/telemetry"),
                    model_cache=ModelCache(host_path="/var/lib/edgespec/models"),
                ),
            )


def render_all(directory: Path) -> list[Path]:
    """The chart and the samples' children as YAML files in ``directory`` (one file a source)."""
    paths = [render_chart(directory)]
    for name, children in sample_children():
        path = directory / f"children-{name}"
        path.write_text(yaml.safe_dump_all(children, sort_keys=False))
        paths.append(path)
    return paths


@dataclass(frozen=True)
class Finding:
    check: str
    name: str
    resource: str
    file: str


def scan(directory: Path) -> list[Finding]:
    """checkov's Kubernetes checks over ``directory``: every failed check (nothing skipped here)."""
    python = ensure()
    result = subprocess.run(
        [str(python), "-m", "checkov.main", "--framework", "kubernetes", "--directory", str(directory),
         "--output", "json", "--quiet", "--compact", "--skip-download", "--no-fail-on-crash"],
        capture_output=True, text=True, check=False, timeout=600,
        env={**os.environ, "BC_SKIP_MAPPING": "TRUE", "CHECKOV_RUN_SCA_PACKAGE_SCAN_V2": "false"},
    )  # fmt: skip
    if result.returncode not in (0, 1):
        raise RuntimeError(f"checkov failed ({result.returncode}): {result.stderr[-2000:]}")
    text = result.stdout.strip()
    reports = json.loads(text) if text else []
    findings = []
    for report in reports if isinstance(reports, list) else [reports]:
        for failed in (report.get("results") or {}).get("failed_checks") or []:
            findings.append(
                Finding(
                    check=failed["check_id"],
                    name=failed.get("check_name", ""),
                    resource=failed.get("resource", ""),
                    file=Path(failed.get("file_path", "")).name,
                )
            )
    return sorted(findings, key=lambda f: (f.check, f.file, f.resource))


def skips(path: Path = SKIPS) -> dict[str, str]:
    """The skip list: ``CKV_K8S_NN  reason`` per line (``#`` comments and blank lines ignored)."""
    out = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            check, _, reason = line.partition(" ")
            out[check] = reason.strip()
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--json", action="store_true", help="print every finding as JSON")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="edgespec-checkov-") as tmp:
        render_all(Path(tmp))
        findings = scan(Path(tmp))
    if args.json:
        print(json.dumps([f.__dict__ for f in findings], indent=1))
        return 0
    skipped = skips()
    for f in findings:
        mark = "skip" if f.check in skipped else "FAIL"
        print(f"{mark} {f.check} {f.file} {f.resource}: {f.name}")
    return 1 if any(f.check not in skipped for f in findings) else 0


if __name__ == "__main__":
    raise SystemExit(main())
