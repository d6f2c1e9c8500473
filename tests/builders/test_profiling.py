"""Profiling Jobs are pinned and bounded, hold the verifier token and no API rights, report by message."""

from __future__ import annotations

from edgespec.builders import ProfilingJobInput, build_profiling_job
from edgespec.builders.naming import verifier_url
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


def test_profiler_has_no_api_rights_and_reports_by_termination_message(
    profiling_input: ProfilingJobInput,
) -> None:
    pod = build_profiling_job(profiling_input)["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False and "serviceAccountName" not in pod
    (container,) = pod["containers"]
    assert container["args"][container["args"].index("--report") + 1] == "/dev/termination-log"
    assert container["terminationMessagePath"] == "/dev/termination-log"
    assert container["terminationMessagePolicy"] == "File"
    assert "--apply" not in container["args"]
