"""Profiling Jobs are pinned, bounded and authenticated; profilers may write EdgeProfiles, nothing else."""

from __future__ import annotations

from builder_samples import OWNER
from edgespec.builders import ProfilingJobInput, build_profiler_rbac, build_profiling_job
from edgespec.builders.naming import profiler_service_account_name, verifier_url
from edgespec.builders.podspec import TOKEN_FILE


def test_job_is_pinned_to_the_chosen_node_of_the_class(profiling_input: ProfilingJobInput) -> None:
    pod = build_profiling_job(profiling_input)["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"edgespec.dev/device-class": "rpi5"}
    terms = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][
        "nodeSelectorTerms"
    ]
    assert terms == [{"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["rpi5-node-0"]}]}]
    assert pod["tolerations"] == [{"key": "edge", "operator": "Exists", "effect": "NoSchedule"}]


def test_job_limits_come_from_the_profiling_spec(profiling_input: ProfilingJobInput) -> None:
    job = build_profiling_job(profiling_input)
    assert job["spec"]["activeDeadlineSeconds"] == 900
    assert job["spec"]["backoffLimit"] == 3
    assert job["spec"]["ttlSecondsAfterFinished"] == 3600
    assert job["spec"]["template"]["spec"]["restartPolicy"] == "Never"
    labels = job["metadata"]["labels"]
    assert labels["edgespec.dev/draft-model"] == "gemma-17b"
    assert labels["edgespec.dev/quantization"] == "Q4_K_M"
    assert labels["app.kubernetes.io/component"] == "profiler"


def test_job_profiles_against_the_verifier_with_the_token(profiling_input: ProfilingJobInput) -> None:
    pod = build_profiling_job(profiling_input)["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == profiler_service_account_name(OWNER)
    (container,) = pod["containers"]
    args = container["args"]
    assert args[0] == "profile"
    pairs = dict(zip(args[1::2], args[2::2], strict=False))
    assert pairs["--device-class"] == "rpi5"
    assert pairs["--draft-model"] == "gemma-17b"
    assert pairs["--quantization"] == "Q4_K_M"
    assert pairs["--target-model"] == "gemma-3-270m"
    assert (pairs["--k-min"], pairs["--k-max"]) == ("1", "10")
    assert args[args.index("--prompts") + 1] == "/etc/edgespec/prompts/prompts.jsonl"
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["EDGESPEC_EDGE_VERIFIER_URL"] == verifier_url(profiling_input.owner, 8000)
    assert env["EDGESPEC_EDGE_VERIFIER_TOKEN_FILE"] == TOKEN_FILE
    (fetch,) = pod["initContainers"]
    assert "https://models.example/gemma-17.q4km.gguf" in fetch["args"]
    prompts = next(v for v in pod["volumes"] if v["name"] == "prompts")
    assert prompts["configMap"]["name"] == "my-prompts"


def test_profiler_may_only_write_edge_profiles() -> None:
    account, role, binding = build_profiler_rbac(OWNER)
    assert account["kind"] == "ServiceAccount"
    assert role["kind"] == "ClusterRole"
    assert role["rules"] == [
        {
            "apiGroups": ["edgespec.dev"],
            "resources": ["edgeprofiles"],
            "verbs": ["get", "create", "patch", "update"],
        }
    ]
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": role["metadata"]["name"],
    }
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": account["metadata"]["name"], "namespace": OWNER.namespace}
    ]
