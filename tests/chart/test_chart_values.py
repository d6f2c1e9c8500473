"""The chart's values: checked by a schema, documented in a generated README, and each one used.

A real ``helm`` (built from its Go module) renders the chart. ``values.schema.json`` must refuse a
wrong type, an unknown key or an out-of-range number at ``helm template``, ``helm install --dry-run``
and ``helm lint``; the README must be what helm-docs makes of ``values.yaml``; and every value in
``values.yaml``, set to something else, must change what the chart renders (a value nothing reads
is a promise the chart does not keep). No cluster is needed.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml
from edgespec.settings import OperatorSettings
from edgespec_dev.cluster import Cluster

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "edgespec"
VALUES = yaml.safe_load((CHART / "values.yaml").read_text())
SCHEMA = json.loads((CHART / "values.schema.json").read_text())
KUBE_VERSION = "1.34.0"

# Values that only matter alongside another one: what each probe also sets.
CONTEXT: dict[str, dict[str, Any]] = {
    "rbac.watchNamespaces": {"rbac.clusterWide": False, "rbac.watchNamespaces": ["team-a"]},
    "rbac.clusterWide": {"rbac.watchNamespaces": ["wired-ns"]},
    "networkPolicy.enabled": {"networkPolicy.workloadNamespaces": ["team-a"]},
}
# Everything optional switched on, so that each value has a template that can show it.
ALL_ON: dict[str, Any] = {
    "metrics.serviceMonitor.enabled": True,
    "metrics.podMonitor.enabled": True,
    "grafana.dashboard.enabled": True,
    "networkPolicy.enabled": True,
    "networkPolicy.workloadNamespaces": ["team-a"],
}


@cache
def helm() -> str:
    from edgespec_dev import tools  # hack/ is on pytest's pythonpath

    return str(tools.ensure("helm"))


def run_helm(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([helm(), *args], capture_output=True, text=True, check=False, timeout=120)


def set_json(values: dict[str, Any]) -> list[str]:
    return [arg for path, value in values.items() for arg in ("--set-json", f"{path}={json.dumps(value)}")]


def template(values: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    return run_helm(
        "template", "es", str(CHART), "--namespace", "edgespec-system", "--kube-version", KUBE_VERSION,
        *set_json(values),
    )  # fmt: skip


def leaves(node: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    """(dotted path, value) of every value a user sets: scalars, lists, and empty or free-form maps."""
    if isinstance(node, dict) and node and not path_is_free_form(path):
        for key, sub in node.items():
            yield from leaves(sub, f"{path}.{key}" if path else key)
    else:
        yield path, node


def schema_at(path: str) -> dict[str, Any] | None:
    """The schema of a dotted values path; None where the schema leaves it free-form or lacks it."""
    node: dict[str, Any] = SCHEMA
    for key in path.split(".") if path else []:
        node = resolve(node)
        props = node.get("properties", {})
        if key in props:
            node = props[key]
        elif isinstance(node.get("additionalProperties"), dict):
            node = node["additionalProperties"]
        else:
            return None
    return resolve(node)


def resolve(node: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        node = SCHEMA["definitions"][node["$ref"].split("/")[-1]]
    return node


def path_is_free_form(path: str) -> bool:
    """Kubernetes objects passed through whole (security contexts, resources): one value each."""
    if not path:
        return False
    schema = schema_at(path)
    return schema is not None and "properties" not in schema


def probe(path: str, default: Any) -> Any:
    """A valid value for ``path`` other than its default (or ALL_ON's), distinctive enough to find."""
    schema = schema_at(path) or {}
    default = ALL_ON.get(path, default)
    token = "wired-" + path.replace(".", "-").lower()
    if isinstance(default, bool):
        return not default
    if isinstance(default, int):
        for bound in ("maximum", "minimum"):
            if bound in schema and schema[bound] != default:
                return schema[bound]
        return default + 1000
    if "enum" in schema:
        return next(v for v in schema["enum"] if v != default)
    if isinstance(default, str):
        if "ms|s|m|h" in schema.get("pattern", ""):
            return "47s"
        if "sha256" in schema.get("pattern", ""):
            return "sha256:" + hashlib.sha256(token.encode()).hexdigest()
        if default.startswith("/") or schema.get("pattern", "").startswith("^(/"):
            return "/" + token
        return token[:63]
    if isinstance(default, list):
        items = resolve(schema.get("items", {}))
        if items.get("type") == "string" or (default and isinstance(default[0], str)):
            return [token[:63]]
        return [{"name": token}]
    return {token: token}


def needle(value: Any) -> str | None:
    """Text the rendered chart must newly contain when ``value`` is set, if there is one to look for."""
    if isinstance(value, str):
        return value
    if isinstance(value, list) and value and isinstance(value[0], str):
        return value[0]
    if isinstance(value, list) and value:
        return str(value[0]["name"])
    if isinstance(value, dict):
        return next(iter(value))
    return None


VALUE_PATHS = [path for path, _ in leaves(VALUES)]


def test_the_walk_reaches_nested_values() -> None:
    nested = {"operator.logLevel", "operator.workers", "metrics.podMonitor.interval", "image.tag"}
    assert nested <= set(VALUE_PATHS)
    assert "securityContext" in VALUE_PATHS  # a Kubernetes object is one value, passed through whole


def test_lint_is_strict_clean() -> None:
    result = run_helm("lint", "--strict", str(CHART), *set_json(ALL_ON))
    assert result.returncode == 0, result.stdout + result.stderr
    result = run_helm("lint", "--strict", str(CHART))
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    ("value", "where"),
    [
        ("operator.workers=abc", "workers"),
        ("operator.workers=0", "workers"),
        ("operator.logLevel=LOUD", "logLevel"),
        ("metrics.port=70000", "port"),
        ("image.pullPolicy=Sometimes", "pullPolicy"),
        ("replicas=6", "replicas"),
        ("operatr.workers=2", "operatr"),  # a typo is refused, not silently ignored
        ("metrics.podMonitor.interval=often", "interval"),
        ("image.digest=sha256:notahexdigest", "digest"),
    ],
)
def test_bad_values_are_refused_naming_the_value(value: str, where: str) -> None:
    rendered = run_helm("template", "es", str(CHART), "--set", value)
    assert rendered.returncode != 0, f"helm template accepted {value}"
    assert "schema" in rendered.stderr and where in rendered.stderr, rendered.stderr
    linted = run_helm("lint", "--strict", str(CHART), "--set", value)
    assert linted.returncode != 0, f"helm lint accepted {value}"
    assert where in linted.stdout + linted.stderr


@pytest.mark.cluster
def test_install_refuses_bad_values_and_the_server_accepts_the_rest(cluster: Cluster) -> None:
    def install(values: dict[str, Any]) -> subprocess.CompletedProcess[str]:
        return run_helm(
            "install", "es-dry-run", str(CHART), "--dry-run=server", "--kubeconfig", str(cluster.kubeconfig),
            "--namespace", "default", *set_json(values),
        )  # fmt: skip

    refused = install({"operator.workers": "abc"})
    assert refused.returncode != 0 and "/operator/workers" in refused.stderr, refused.stderr
    # everything on that needs no third-party CRD (prometheus-operator's are not installed here)
    accepted = install(
        {
            "crds.install": False,
            "grafana.dashboard.enabled": True,
            "networkPolicy.enabled": True,
            "networkPolicy.workloadNamespaces": ["default"],
            "networkPolicy.metricsFrom": [{"namespaceSelector": {"matchLabels": {"name": "monitoring"}}}],
        }
    )
    assert accepted.returncode == 0, accepted.stderr
    assert accepted.stdout.count("kind: NetworkPolicy") == 2, accepted.stdout


def test_a_digest_pins_the_image_by_content_and_replaces_the_tag() -> None:
    digest = "sha256:" + "0123456789abcdef" * 4
    rendered = template({"image.digest": digest, "image.tag": "v9", "workloadImages.edge.digest": digest})
    assert rendered.returncode == 0, rendered.stderr
    assert f'image: "ghcr.io/edgespec/operator@{digest}"' in rendered.stdout
    assert f'value: "ghcr.io/edgespec/edge@{digest}"' in rendered.stdout
    assert "operator:v9" not in rendered.stdout
    # the others keep repository:tag
    assert 'value: "ghcr.io/edgespec/verifier:' in rendered.stdout


def test_the_defaults_and_every_probe_satisfy_the_schema() -> None:
    assert template({}).returncode == 0
    for path, default in leaves(VALUES):
        assert path_is_free_form(path) or schema_at(path) is not None, f"values.schema.json lacks {path}"
        result = template({**CONTEXT.get(path, {}), path: probe(path, default)})
        assert result.returncode == 0, f"{path}={probe(path, default)!r} refused:\n{result.stderr}"


@pytest.mark.parametrize("path", VALUE_PATHS)
def test_every_value_is_wired(path: str) -> None:
    default = dict(leaves(VALUES))[path]
    value = probe(path, default)
    base = template({**ALL_ON, **CONTEXT.get(path, {})})
    assert base.returncode == 0, base.stderr
    changed = template({**ALL_ON, **CONTEXT.get(path, {}), path: value})
    assert changed.returncode == 0, changed.stderr
    assert changed.stdout != base.stdout, f"{path}={value!r} changes nothing the chart renders"
    text = needle(value)
    if text is not None:
        assert changed.stdout.count(text) > base.stdout.count(text), f"{path}: {text!r} not in the output"


def test_operator_settings_read_every_variable_the_chart_sets() -> None:
    docs = [d for d in yaml.safe_load_all(template({"operator.logLevel": "WARNING"}).stdout) if d]
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    env = deployment["spec"]["template"]["spec"]["containers"][0]["env"]
    assert {"name": "EDGESPEC_LOG_LEVEL", "value": "WARNING"} in env
    fields = {f"EDGESPEC_{name.upper()}" for name in OperatorSettings.model_fields}
    set_by_value = {e["name"] for e in env if e["name"].startswith("EDGESPEC_") and "value" in e}
    assert set_by_value - fields == set(), "the chart sets variables the operator never reads"


def test_workload_resources_reach_the_operator_as_the_builders_defaults() -> None:
    """The chart's workloadResources are what the operator applies (and its code defaults the same)."""
    from edgespec.builders import WorkloadResources

    def settings(values: dict[str, Any]) -> OperatorSettings:
        docs = [d for d in yaml.safe_load_all(template(values).stdout) if d]
        env = next(d for d in docs if d["kind"] == "Deployment")["spec"]["template"]["spec"]["containers"][0][
            "env"
        ]
        value = next(e["value"] for e in env if e["name"] == "EDGESPEC_WORKLOAD_RESOURCES")
        return OperatorSettings.model_validate({"workload_resources": json.loads(value)})

    assert settings({}).workload_resources == WorkloadResources()
    changed = settings({"workloadResources.fetch.limits.memory": "3Gi"}).workload_resources
    assert changed.fetch.limits == {"cpu": "1", "memory": "3Gi"}


def test_the_readme_is_what_helm_docs_makes_of_the_values() -> None:
    from edgespec_dev import chartdocs

    assert (CHART / "README.md").read_text() == chartdocs.render(), (
        "charts/edgespec/README.md is stale: run python -m edgespec_dev.chartdocs"
    )


def test_the_readme_describes_every_value() -> None:
    rows = {}
    for line in (CHART / "README.md").read_text().splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) >= 4 and cells[0] not in ("Key", "-----"):
            rows[cells[0]] = cells[-1]
    for path in VALUE_PATHS:
        parts = path.split(".")
        described = [rows[p] for p in (".".join(parts[:i]) for i in range(len(parts), 0, -1)) if p in rows]
        assert described and described[0], f"{path} has no description in values.yaml (# -- ...)"


@pytest.mark.cluster
def test_the_chart_installs_upgrades_and_uninstalls(cluster: Cluster) -> None:
    """A real release on the local cluster (the operator pod lands on a KWOK node, which reports it ready)."""
    namespace = "edgespec-install-test"
    common = ["--kubeconfig", str(cluster.kubeconfig), "--namespace", namespace]
    # the CRDs are already applied by other tests, outside Helm: the release must not claim them
    values = set_json(
        {
            "crds.install": False,
            "networkPolicy.enabled": True,
            "networkPolicy.workloadNamespaces": [namespace],
        }
    )
    try:
        installed = run_helm(
            "install",
            "es-real",
            str(CHART),
            *common,
            "--create-namespace",
            *values,
            "--wait",
            "--timeout",
            "180s",
        )
        assert installed.returncode == 0, installed.stderr
        upgraded = run_helm(
            "upgrade", "es-real", str(CHART), *common, *values, "--set", "operator.logLevel=DEBUG", "--wait",
            "--timeout", "180s",
        )  # fmt: skip
        assert upgraded.returncode == 0, upgraded.stderr
        deployment = json.loads(
            cluster.kubectl("get", "deployment", "es-real-edgespec", "-n", namespace, "-o", "json").stdout
        )
        env = deployment["spec"]["template"]["spec"]["containers"][0]["env"]
        assert {"name": "EDGESPEC_LOG_LEVEL", "value": "DEBUG"} in env
        available = {c["type"]: c["status"] for c in deployment["status"].get("conditions", [])}
        assert available.get("Available") == "True"  # KWOK reports the pod ready; nothing runs it
        policies = cluster.kubectl("get", "networkpolicies", "-n", namespace, "-o", "name").stdout.split()
        assert sorted(policies) == [
            "networkpolicy.networking.k8s.io/es-real-edgespec-operator",
            "networkpolicy.networking.k8s.io/es-real-edgespec-verifiers",
        ]
        refused = run_helm("upgrade", "es-real", str(CHART), *common, "--set", "operator.workers=abc")
        assert refused.returncode != 0 and "/operator/workers" in refused.stderr
    finally:
        uninstalled = run_helm("uninstall", "es-real", *common, "--wait", "--timeout", "120s")
        cluster.kubectl("delete", "namespace", namespace, "--wait=false", "--ignore-not-found", check=False)
    assert uninstalled.returncode == 0, uninstalled.stderr
