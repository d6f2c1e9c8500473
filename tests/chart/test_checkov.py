"""A peer scanner's verdict: checkov's Kubernetes checks over the chart and every child the builders make.

The chart rendered with its default values and the children ``plan.desired_children`` builds for
each sample under ``samples/`` (every class selected, a profiling Job per class, node cache and
telemetry on, as the chart configures the operator) are scanned by checkov (PyPI, in its own venv:
``edgespec_dev.checkov``). Every finding must be a documented choice in ``hack/checkov-skips.txt``
(reason included in docs/reliability.md), and every choice there must still be needed.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml
from edgespec_dev import checkov

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def findings(tmp_path_factory: pytest.TempPathFactory) -> list[checkov.Finding]:
    directory = tmp_path_factory.mktemp("checkov")
    paths = checkov.render_all(directory)
    assert len(paths) >= 4  # the chart and at least three samples
    return checkov.scan(directory)


def test_every_finding_is_a_documented_choice(findings: list[checkov.Finding]) -> None:
    skips = checkov.skips()
    unexpected = [f for f in findings if f.check not in skips]
    assert not unexpected, "\n".join(f"{f.check} {f.file} {f.resource}: {f.name}" for f in unexpected)
    stale = set(skips) - {f.check for f in findings}
    assert not stale, f"hack/checkov-skips.txt skips {sorted(stale)}, which find nothing any more"


def test_the_scan_covers_every_workload(findings: list[checkov.Finding]) -> None:
    # The digest check fires once per workload: the chart's operator and, per sample, a verifier,
    # a draft DaemonSet and a profiling Job per class. (Its count proves the children were scanned.)
    workloads = {f.resource for f in findings if f.check == "CKV_K8S_43"}
    kinds = {r.split(".")[0] for r in workloads}
    assert kinds == {"Deployment", "DaemonSet", "Job"} and len(workloads) >= 10, workloads


def test_every_skip_is_explained_in_the_reliability_doc() -> None:
    doc = (REPO / "docs" / "reliability.md").read_text()
    for check, reason in checkov.skips().items():
        assert check in doc and reason[:60] in doc, f"docs/reliability.md does not explain {check}"


def test_with_network_policies_on_only_draft_servers_and_profilers_lack_one(tmp_path: Path) -> None:
    from edgespec_dev import tools

    chart = subprocess.run(
        [str(tools.ensure("helm")), "template", "edgespec", str(REPO / "charts" / "edgespec"),
         "--namespace", "edgespec-system", "--kube-version", checkov.KUBE_VERSION,
         "--set", "networkPolicy.enabled=true", "--set", "networkPolicy.workloadNamespaces={team-a}"],
        capture_output=True, text=True, check=True, timeout=120,
    ).stdout  # fmt: skip
    (tmp_path / "chart.yaml").write_text(chart)
    for name, children in checkov.sample_children():
        (tmp_path / f"children-{name}").write_text(yaml.safe_dump_all(children, sort_keys=False))
    uncovered = [f.resource for f in checkov.scan(tmp_path) if f.check == "CKV2_K8S_6"]
    assert uncovered
    for resource in uncovered:
        assert any(f"component-{c}." in resource for c in ("draft", "profiler")), resource
