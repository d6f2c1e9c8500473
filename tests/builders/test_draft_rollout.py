"""A new K touches only the ConfigMap (no restart); a new draft or quantisation rolls the DaemonSet."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest
import yaml
from edgespec.builders import (
    DraftServerInput,
    build_draft_config_map,
    build_draft_daemon_set,
    build_draft_servers,
    build_draft_service,
)
from edgespec.builders.drafts import CONFIG_FILE, CONFIG_KEY
from edgespec.builders.inputs import ModelCache
from edgespec.builders.naming import drafts_service_name, verifier_url


def template_hash(daemon_set: dict[str, Any]) -> str:
    """What the DaemonSet controller compares to decide a rollout: the pod template, canonicalised."""
    canonical = json.dumps(daemon_set["spec"]["template"], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def with_choice(inp: DraftServerInput, **change: Any) -> DraftServerInput:
    return inp.model_copy(update=change)


def test_changing_k_changes_only_the_config_map(draft_input: DraftServerInput) -> None:
    before = build_draft_servers(draft_input)
    after = build_draft_servers(with_choice(draft_input, k=7))
    changed = [a["kind"] for a, b in zip(before, after, strict=True) if a != b]
    assert changed == ["ConfigMap"]
    assert template_hash(before[1]) == template_hash(after[1])
    assert yaml.safe_load(after[0]["data"][CONFIG_KEY])["k"] == 7


@pytest.mark.parametrize(
    "change", [{"quantization": "Q2_K"}, {"draft_model": "gemma-16b", "quantization": "Q4_0"}]
)
def test_changing_draft_or_quantization_rolls_the_pods(
    draft_input: DraftServerInput, change: dict[str, str]
) -> None:
    before = build_draft_daemon_set(draft_input)
    after = build_draft_daemon_set(with_choice(draft_input, **change))
    assert template_hash(before) != template_hash(after)
    assert before["metadata"]["name"] == after["metadata"]["name"]  # the same DaemonSet rolls
    assert before["spec"]["selector"] == after["spec"]["selector"]  # selectors are immutable
    assert build_draft_config_map(draft_input) == build_draft_config_map(with_choice(draft_input, **change))


def test_daemon_set_runs_on_the_class_nodes_with_its_resources(draft_input: DraftServerInput) -> None:
    pod = build_draft_daemon_set(draft_input)["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"edgespec.dev/device-class": "rpi5"}
    assert pod["tolerations"] == [{"key": "edge", "operator": "Exists", "effect": "NoSchedule"}]
    (server,) = pod["containers"]
    assert server["resources"] == {
        "requests": {"cpu": "2", "memory": "1Gi"},
        "limits": {"cpu": "4", "memory": "2Gi"},
    }
    env = {e["name"]: e for e in server["env"]}
    assert env["EDGESPEC_EDGE_N_THREADS"]["value"] == "4"
    assert env["EDGESPEC_EDGE_K_FILE"]["value"] == CONFIG_FILE
    assert env["EDGESPEC_EDGE_VERIFIER_URL"]["value"] == verifier_url(draft_input.owner, 8000)
    assert "EDGESPEC_EDGE_K" not in env  # K in the template would restart pods on every change
    (fetch,) = pod["initContainers"]
    assert fetch["args"][1] == "https://models.example/gemma-17.q4km.gguf"
    mount = next(m for m in server["volumeMounts"] if CONFIG_FILE.startswith(m["mountPath"] + "/"))
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    assert volume["configMap"]["name"] == build_draft_config_map(draft_input)["metadata"]["name"]


def test_threads_default_to_the_cpu_limit(draft_input: DraftServerInput) -> None:
    jetson = with_choice(draft_input, device_class_name="jetson-orin")
    (server,) = build_draft_daemon_set(jetson)["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e for e in server["env"]}
    assert env["EDGESPEC_EDGE_N_THREADS"]["valueFrom"]["resourceFieldRef"]["resource"] == "limits.cpu"


def test_unknown_choice_is_rejected_with_what_exists(draft_input: DraftServerInput) -> None:
    with pytest.raises(ValueError, match="Q4_K_M, Q2_K"):
        build_draft_daemon_set(with_choice(draft_input, quantization="Q8_0"))
    with pytest.raises(ValueError, match="rpi5, jetson-orin"):
        build_draft_daemon_set(with_choice(draft_input, device_class_name="pi3"))


def test_one_service_keeps_local_clients_on_their_node_for_every_class(draft_input: DraftServerInput) -> None:
    service = build_draft_service(draft_input)
    assert service["spec"]["internalTrafficPolicy"] == "Local"
    assert service["metadata"]["name"] == drafts_service_name(draft_input.owner)
    for cls in ("rpi5", "jetson-orin"):  # it selects the draft pods of every class, and nothing else
        pods = build_draft_daemon_set(with_choice(draft_input, device_class_name=cls))["spec"]["template"]
        assert service["spec"]["selector"].items() <= pods["metadata"]["labels"].items()
    assert service["spec"]["selector"]["app.kubernetes.io/component"] == "draft"  # never the verifier


def test_config_file_is_what_the_draft_server_parses(draft_input: DraftServerInput) -> None:
    """Contract with edgespec_edge.config: the server must read exactly the K we wrote."""
    from edgespec_edge import config  # the draft server's own parser (never skipped: it is installed)

    text = build_draft_config_map(with_choice(draft_input, k=9))["data"][CONFIG_KEY]
    assert config.parse_k(text) == 9


def test_a_cloud_only_class_fetches_and_loads_no_draft_model(draft_input: DraftServerInput) -> None:
    cache = ModelCache(host_path="/var/lib/edgespec/models")
    speculative = build_draft_servers(with_choice(draft_input, model_cache=cache))
    cloud = build_draft_servers(with_choice(draft_input, model_cache=cache, cloud_only=True))
    pod = cloud[1]["spec"]["template"]["spec"]
    assert "initContainers" not in pod and speculative[1]["spec"]["template"]["spec"]["initContainers"]
    (container,) = pod["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["EDGESPEC_EDGE_MODE"] == "cloud-only"
    assert "EDGESPEC_EDGE_DRAFT_MODEL" not in env
    assert [v["name"] for v in pod["volumes"] if "hostPath" in v or v["name"] == "models"] == []
    assert all(m["mountPath"] != "/models" for m in container["volumeMounts"])
    # The mode is in the ConfigMap for people and tools; the server still parses its K from it.
    assert yaml.safe_load(cloud[0]["data"][CONFIG_KEY])["mode"] == "cloud-only"
    assert yaml.safe_load(speculative[0]["data"][CONFIG_KEY])["mode"] == "speculative"
    speculative_env = {
        e["name"]: e.get("value") for e in speculative[1]["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert speculative_env["EDGESPEC_EDGE_MODE"] == "speculative"
    # Switching mode rolls the pods of the same DaemonSet (one loads a model, the other does not).
    assert template_hash(cloud[1]) != template_hash(speculative[1])
    assert cloud[1]["metadata"]["name"] == speculative[1]["metadata"]["name"]


def test_a_draft_change_surges_when_the_node_fits_both_else_drains(draft_input: DraftServerInput) -> None:
    """Surge: the new pod starts beside the old one, which stays until the new one is ready."""
    drain = build_draft_daemon_set(draft_input)["spec"]["updateStrategy"]
    surge = build_draft_daemon_set(with_choice(draft_input, surge=True))["spec"]["updateStrategy"]
    assert drain == {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1}}
    assert surge == {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}
    # Either way a pod is in the node-local Service only once ready (model loaded): the gate that
    # makes surge gap-free and bounds drain's gap to the new pod's start.
    (container,) = build_draft_daemon_set(draft_input)["spec"]["template"]["spec"]["containers"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    ports = container["ports"]
    assert all("hostPort" not in p for p in ports)  # two pods of a node can run at once


@pytest.mark.parametrize("role", ["draft", "verifier"])
def test_a_stopping_server_keeps_serving_until_its_endpoint_is_gone(
    role: str, draft_input: DraftServerInput, verifier_input: Any
) -> None:
    """A preStop sleep delays SIGTERM until kube-proxy has dropped the terminating pod, within the
    grace period; without it, a rollout refused or hung requests (seen on the real node)."""
    from edgespec.builders import build_verifier_deployment
    from edgespec.builders.podspec import DRAIN_SECONDS

    workload = (
        build_draft_daemon_set(draft_input) if role == "draft" else build_verifier_deployment(verifier_input)
    )
    pod = workload["spec"]["template"]["spec"]
    serving = pod["containers"][0]
    assert serving["lifecycle"]["preStop"] == {"sleep": {"seconds": DRAIN_SECONDS}}
    assert 0 < DRAIN_SECONDS < pod["terminationGracePeriodSeconds"]
