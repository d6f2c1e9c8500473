"""Run-time adaptation through the real operator: draft-server telemetry in, K changed once via the ConfigMap.

The reports are sent by the draft server's own telemetry code (``edgespec_edge.telemetry``: the
tally its loop fills each round, and the push it makes) to the operator's real HTTP endpoint, with
a token the real API server issued for a real draft pod of the class (the DaemonSet's pod on a KWOK
node), with the audience the pod's projected volume asks for, as the kubelet would project it; the
operator checks it with a real TokenReview. KWOK pods run no code, so the rounds are the ones a
draft server would count if users' prompts halved the per-token acceptance the profile measured; the
rest (endpoint, identity, pooling, folding, selection, ConfigMap) is the operator's.

``test_a_draft_pods_token_reports_for_its_own_class_only`` is the telemetry-identity row of
docs/reliability.md: a pod of one class cannot report for another, forged or absent tokens get 401.
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest
import yaml
from edgespec.adaptation import effective_profile, profiled_per_token
from edgespec.api.deployment import LiveTelemetry
from edgespec.builders.naming import draft_name
from edgespec.configspec import geometric_alpha, load_profiles, rank
from edgespec.configspec.grid import verify_latency_on_grid
from edgespec.live import TELEMETRY_AUDIENCE
from edgespec_edge.loop import RoundStats
from edgespec_edge.telemetry import RoundTally, TelemetrySettings, push_once
from kube_helpers import events_of, get_object, owner_of, status_of, wait_for

pytestmark = pytest.mark.cluster
ROOT = Path(__file__).resolve().parents[2]
NAME, JETSON = "adaptive", "jetson-agx-orin"
CONFIG = draft_name(owner_of(NAME), JETSON)
MIN_ROUNDS, INTERVAL_S = 100, 4
FACTOR = 0.5  # users' prompts halve the per-token acceptance the profile measured


def _jetson(cluster: Any) -> dict[str, Any]:
    return dict(next(c for c in status_of(cluster, NAME)["deviceClasses"] if c["name"] == JETSON))


def _config_k(cluster: Any) -> int:
    text = get_object(cluster, "configmap", CONFIG)["data"]["speculative.yaml"]
    return int(yaml.safe_load(text)["k"])


def _draft_pod(cluster: Any, device_class: str) -> dict[str, Any]:
    """A scheduled pod of the class's draft DaemonSet (KWOK runs it on a node of the class)."""
    pods = json.loads(cluster.kubectl("get", "pods", "-n", "default", "-o", "json").stdout)["items"]
    owner = draft_name(owner_of(NAME), device_class)
    for pod in pods:
        refs = pod["metadata"].get("ownerReferences") or []
        if any(r["name"] == owner for r in refs) and pod["spec"].get("nodeName"):
            return dict(pod)
    return {}


def _pod_token(cluster: Any, pod: dict[str, Any], audience: str = TELEMETRY_AUDIENCE) -> str:
    """What the kubelet projects into ``pod``: its ServiceAccount's token, bound to it, for ``audience``."""
    return cluster.kubectl(
        "create", "token", pod["spec"].get("serviceAccountName") or "default", "-n", "default",
        "--audience", audience, "--duration", "10m",
        "--bound-object-kind", "Pod", "--bound-object-name", pod["metadata"]["name"],
        "--bound-object-uid", pod["metadata"]["uid"],
    ).stdout.strip()  # fmt: skip


def _profile(selection: dict[str, Any]) -> Any:
    return next(
        p
        for p in load_profiles([ROOT / "samples" / "profiles" / "paper-illustrative.yaml"])
        if (p.device_class, p.draft_model, p.quantization)
        == (JETSON, selection["draftModel"], selection["quantization"])
    )


def _true_alpha(profile: Any, k: int) -> float:
    return float(geometric_alpha(FACTOR * profiled_per_token(profile, k), k))


def _push(
    url: str, pod: dict[str, Any], token_file: Path, selection: dict[str, Any], rounds: int = MIN_ROUNDS
) -> None:
    """One report, as the Jetson's draft server sends it after ``rounds`` rounds at the current K."""
    k = selection["k"]
    profile = _profile(selection)
    verify_s = float(verify_latency_on_grid(profile.verify_latency, np.array([k], dtype=np.int64))[0])
    accepted = round(k * rounds * _true_alpha(profile, k))
    tally = RoundTally()
    for i in range(rounds):  # spread the accepted tokens over the rounds, as a server would see them
        share = accepted * (i + 1) // rounds - accepted * i // rounds
        tally.record(
            RoundStats(k=k, drafted=k, accepted=share, draft_s=0.01, round_trip_s=verify_s, verify_s=verify_s)
        )
    settings = TelemetrySettings(
        telemetry_url=f"{url}/v1/telemetry",
        namespace="default",
        deployment=NAME,
        device_class=JETSON,
        draft_name=selection["draftModel"],
        quantization=selection["quantization"],
        node_name=pod["spec"]["nodeName"],
        telemetry_token_file=str(token_file),
    )

    async def send() -> bool:
        async with aiohttp.ClientSession() as session:
            return await push_once(session, settings, tally)

    assert asyncio.run(send()), "the operator refused a well-formed report"


def _post(url: str, body: Any, token: str | None) -> tuple[int, str]:
    request = urllib.request.Request(
        f"{url}/v1/telemetry",
        data=json.dumps(body).encode(),
        headers={
            "Content-Type": "application/json",
            **({"Authorization": f"Bearer {token}"} if token else {}),
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def _wait_for_fold(cluster: Any, after: str) -> dict[str, Any]:
    """The class's live telemetry once a report newer than ``after`` has been folded in."""
    return dict(
        wait_for("the report folded in", lambda: (s := _jetson(cluster)["live"])["updatedAt"] != after and s)
    )


def _metric(url: str, name: str) -> float:
    text = urllib.request.urlopen(f"{url}/metrics", timeout=10).read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name))


@pytest.fixture
def with_profiles(operator_process: Any) -> Iterator[Any]:
    """The illustrative profiles imported for the test, and removed after it with its deployment
    (profiles are cluster-scoped: left behind, they would answer other modules' profiling tests)."""
    cluster = operator_process.cluster
    profiles = str(ROOT / "samples" / "profiles" / "paper-illustrative.yaml")
    cluster.kubectl("apply", "-f", profiles)
    try:
        yield operator_process
    finally:
        cluster.kubectl("delete", "specdeploy", NAME, "-n", "default", "--ignore-not-found")
        cluster.kubectl("delete", "-f", profiles, "--ignore-not-found")


def test_live_acceptance_moves_k_once_through_the_configmap(with_profiles: Any, tmp_path: Path) -> None:
    cluster, url = with_profiles.cluster, with_profiles.url
    doc = yaml.safe_load((ROOT / "samples" / "speculativedeployment-paper.yaml").read_text())
    doc["metadata"]["name"] = NAME
    doc["spec"]["verifier"]["gpus"] = 1
    doc["spec"]["adaptation"] = {"minRounds": MIN_ROUNDS, "minGain": 0.05, "minIntervalSeconds": INTERVAL_S}
    cluster.kubectl("apply", "-f", "-", input=json.dumps(doc))
    wait_for("the ConfigMap of the Jetson", lambda: get_object(cluster, "configmap", CONFIG))
    wait_for(
        "the Jetson's selection in status", lambda: JETSON in status_of(cluster, NAME).get("kSummary", "")
    )
    offline = _jetson(cluster)["selection"]
    assert offline["k"] >= 8 and not offline.get("adapted") and _config_k(cluster) == offline["k"]
    daemon_set = get_object(cluster, "daemonset", CONFIG)
    env = {e["name"]: e for e in daemon_set["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["EDGESPEC_EDGE_TELEMETRY_URL"]["value"].endswith("/v1/telemetry")  # the servers know where
    assert env["EDGESPEC_EDGE_DEVICE_CLASS"]["value"] == JETSON
    pod = wait_for("a scheduled Jetson draft pod", lambda: _draft_pod(cluster, JETSON))
    token = _pod_token(cluster, pod)
    token_file = tmp_path / "token"  # where the pod's projected volume puts it
    token_file.write_text(token)

    # Bad reports are refused with the reason and change nothing.
    good = {
        "namespace": "default", "deployment": NAME, "device_class": JETSON,
        "draft_model": offline["draftModel"], "quantization": offline["quantization"],
        "counts": [{"k": offline["k"], "rounds": 500, "drafted_tokens": 500 * offline["k"],
                    "accepted_tokens": 0, "verify_seconds": 50.0}],
    }  # fmt: skip
    assert _post(url, good, None)[0] == 401
    assert _post(url, good, "not-the-token")[0] == 401
    code, text = _post(url, {**good, "device_class": "nope"}, token)
    assert code == 403 and f"class {JETSON}" in text  # a pod reports for its own class only
    code, text = _post(url, {**good, "counts": [{**good["counts"][0], "accepted_tokens": -1}]}, token)
    assert code == 422 and "counts.0.accepted_tokens" in text
    time.sleep(1.0)
    assert _jetson(cluster).get("live") is None and _config_k(cluster) == offline["k"]

    # The draft server reports lower acceptance than profiled: K moves to what the model predicts.
    _push(url, pod, token_file, offline)
    moved = wait_for("K to move", lambda: (s := _jetson(cluster)["selection"])["k"] != offline["k"] and s)
    live = _jetson(cluster)["live"]
    point = live["points"][0]
    assert point["k"] == offline["k"] and point["rounds"] == MIN_ROUNDS
    assert point["alpha"] == pytest.approx(_true_alpha(_profile(offline), offline["k"]), abs=0.01)
    expected = (
        rank(
            [effective_profile(_profile(offline), LiveTelemetry.model_validate(live))],
            k_values=list(range(2, 11)),
            target_model="llama-3.1-70b",
            prices_usd_per_million={"llama-3.1-70b": 0.9},
            device_classes=[JETSON],
        )
        .selections[JETSON]
        .choice.k
    )
    assert moved["k"] == expected < offline["k"] and moved["adapted"]
    assert moved["draftModel"] == offline["draftModel"]  # only K adapts
    wait_for("the ConfigMap to carry the new K", lambda: _config_k(cluster) == moved["k"])

    # The same truth keeps arriving, now measured at the new K, past several minimum intervals.
    for _ in range(3):
        time.sleep(INTERVAL_S + 0.5)
        _push(url, pod, token_file, moved)
        live = _wait_for_fold(cluster, after=live["updatedAt"])
    assert {p["k"] for p in live["points"]} == {offline["k"], moved["k"]}
    assert _jetson(cluster)["selection"]["k"] == moved["k"] == _config_k(cluster)
    adapted = [e for e in events_of(cluster, NAME) if e["reason"] == "Adapted"]
    assert len(adapted) == 1 and f"K={moved['k']}" in adapted[0]["message"]

    # K moved through the ConfigMap alone: the pods were not touched.
    after = get_object(cluster, "daemonset", CONFIG)
    assert after["spec"]["template"] == daemon_set["spec"]["template"]
    assert after["metadata"]["generation"] == daemon_set["metadata"]["generation"]

    assert _metric(url, 'edgespec_selection_changes_total{reason="Adapted"}') == 1
    assert _metric(url, 'edgespec_telemetry_reports_total{result="accepted"}') >= 4
    assert _metric(url, 'edgespec_telemetry_reports_total{result="unauthorized"}') == 3
    assert _metric(url, 'edgespec_reconciles_total{result="ok"}') > 0


def test_a_draft_pods_token_reports_for_its_own_class_only(with_profiles: Any) -> None:
    """Tokens the real API server issued, checked by the operator's real TokenReview."""
    cluster, url = with_profiles.cluster, with_profiles.url
    doc = yaml.safe_load((ROOT / "samples" / "speculativedeployment-paper.yaml").read_text())
    doc["metadata"]["name"] = NAME
    doc["spec"]["verifier"]["gpus"] = 1
    doc["spec"]["adaptation"] = {"minRounds": 10**6}  # pooled, never folded: the test is about who
    cluster.kubectl("apply", "-f", "-", input=json.dumps(doc))
    wait_for("the selections in status", lambda: JETSON in status_of(cluster, NAME).get("kSummary", ""))
    jetson_pod = wait_for("a scheduled Jetson draft pod", lambda: _draft_pod(cluster, JETSON))
    rpi5_pod = wait_for("a scheduled rpi5 draft pod", lambda: _draft_pod(cluster, "rpi5"))
    spec = jetson_pod["spec"]
    assert spec.get("automountServiceAccountToken") is False  # no API token, only the projected one
    (projected,) = [v for v in spec["volumes"] if "projected" in v]
    assert projected["projected"]["sources"][0]["serviceAccountToken"]["audience"] == TELEMETRY_AUDIENCE

    def report(device_class: str, node: str) -> dict[str, Any]:
        selection = next(c for c in status_of(cluster, NAME)["deviceClasses"] if c["name"] == device_class)
        chosen = selection["selection"]
        k = chosen["k"]
        return {
            "namespace": "default", "deployment": NAME, "device_class": device_class, "node": node,
            "draft_model": chosen["draftModel"], "quantization": chosen["quantization"],
            "counts": [{"k": k, "rounds": 10, "drafted_tokens": 10 * k, "accepted_tokens": 5 * k,
                        "verify_seconds": 1.0}],
        }  # fmt: skip

    jetson_node, rpi5_node = jetson_pod["spec"]["nodeName"], rpi5_pod["spec"]["nodeName"]
    jetson, rpi5 = _pod_token(cluster, jetson_pod), _pod_token(cluster, rpi5_pod)
    # 401 before anything else: absent, forged (a valid token with its signature altered), a token
    # of the right pod for the API server's audience, and a garbage body all answer alike.
    header, payload, signature = jetson.split(".")
    forged = f"{header}.{payload}.{signature[:-4]}{'AAAA' if signature[-4:] != 'AAAA' else 'BBBB'}"
    api_token = _pod_token(cluster, jetson_pod, audience="https://kubernetes.default.svc.cluster.local")
    for token in (None, "not-a-token", forged, api_token):
        code, text = _post(url, report(JETSON, jetson_node), token)
        assert code == 401, (token, code, text)
    assert _post(url, "not even a report", None)[0] == 401
    # A real pod of class rpi5 cannot report for the Jetson class, nor as another node.
    code, text = _post(url, report(JETSON, jetson_node), rpi5)
    assert code == 403 and "class rpi5" in text, text
    code, text = _post(url, report("rpi5", jetson_node), rpi5)
    assert code == 403 and f"runs on node {rpi5_node}" in text, text
    assert _jetson(cluster).get("live") is None
    # Each pod reports for its own class, from its own node.
    for token, device_class, node in ((jetson, JETSON, jetson_node), (rpi5, "rpi5", rpi5_node)):
        code, text = _post(url, report(device_class, node), token)
        assert code == 202, text
    assert _metric(url, 'edgespec_telemetry_reports_total{result="unauthorized"}') >= 6
