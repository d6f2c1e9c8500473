"""What the end-to-end scenario needs of a cluster, through ``KUBECONFIG`` and labels only.

Nothing here knows how the cluster was made: the local harness (``python -m edgespec_dev.e2e up``),
kind (``hack/kind-e2e.sh``) and K3s all hand over a kubeconfig in ``EDGESPEC_E2E_KUBECONFIG``. Objects
are found by the labels the operator documents (``app.kubernetes.io/component``,
``app.kubernetes.io/instance``, ``edgespec.dev/device-class``), never by generated names.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import urllib.request
from collections.abc import Callable, Iterator
from functools import cache
from pathlib import Path
from typing import Any

import yaml
from edgespec_dev.dashboard import exposition_names
from edgespec_dev.portforward import port_forward
from edgespec_dev.waiting import wait_for

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "samples" / "speculativedeployment-local.yaml"
NAMESPACE = os.environ.get("EDGESPEC_E2E_NAMESPACE", "edgespec-e2e")
DEVICE_CLASS = os.environ.get("EDGESPEC_E2E_DEVICE_CLASS", "local-cpu")
LABEL_DEVICE_CLASS = "edgespec.dev/device-class"
LABEL_COMPONENT = "app.kubernetes.io/component"
LABEL_INSTANCE = "app.kubernetes.io/instance"
# Generous bounds for a shared 2-core machine: they stop a stuck run, they do not measure speed.
# Profiling is bounded by the sample itself: its Jobs run one at a time per class
# (profiling.concurrencyPerClass), each within profiling.timeoutSeconds.
PROMPTS_CONFIG_MAP = "e2e-profiling-prompts"
# Two prompts: the scenario checks that profiling produces profiles the operator selects from, not
# what they measure; each prompt costs each Job about 15 s of the two busy cores at four K.
PROFILING_PROMPTS = [
    "Explain in two sentences why the sky is blue.",
    "Describe how a bicycle gear works.",
]
READY_TIMEOUT_S = float(os.environ.get("EDGESPEC_E2E_READY_TIMEOUT", 600))


LABEL_DRAFT_MODEL = "edgespec.dev/draft-model"
LOOPING_CLIENT = "e2e-looping-client"
# Runs in the edge image's Python: POST short greedy completions until /tmp/stop exists (bounded by
# a deadline too), then print a JSON summary. Each failure keeps its time and error.
LOOPING_CLIENT_SCRIPT = """
import json, os, sys, time, urllib.request
url, model = sys.argv[1] + "/v1/completions", sys.argv[2]
body = json.dumps({"model": model, "prompt": "Hello", "max_tokens": 2, "temperature": 0}).encode()
ok, failures, start = 0, [], time.monotonic()
while not os.path.exists("/tmp/stop") and time.monotonic() - start < 900:
    try:
        request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
        urllib.request.urlopen(request, timeout=60).read()
        ok += 1
        if ok == 1:
            print("first-ok", flush=True)
    except Exception as error:
        failures.append({"t": round(time.monotonic() - start, 2), "error": repr(error)[:200]})
        time.sleep(0.2)
print(json.dumps({"ok": ok, "failed": len(failures), "failures": failures[:50],
                  "seconds": round(time.monotonic() - start, 1)}), flush=True)
"""


class E2E:
    """A kubectl bound to the e2e kubeconfig."""

    def __init__(self, kubeconfig: Path, kubectl: Path) -> None:
        self.kubeconfig = kubeconfig
        self.kubectl_path = kubectl

    def kubectl(self, *args: str, check: bool = True, stdin: str | None = None) -> str:
        result = subprocess.run(
            [str(self.kubectl_path), f"--kubeconfig={self.kubeconfig}", *args],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=120,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed: {result.stderr.strip()}")
        return result.stdout

    def get_json(self, *args: str) -> dict[str, Any]:
        return dict(json.loads(self.kubectl("get", *args, "-o", "json")))

    def items(self, *args: str) -> list[dict[str, Any]]:
        return list(self.get_json(*args)["items"])


@cache
def _reference_model() -> Any:
    from edgespec_dev.drafts import target_path
    from llama_cpp import Llama

    return Llama(str(target_path()), n_ctx=512, n_threads=1, verbose=False)


@cache
def reference_greedy(prompt: str, max_tokens: int) -> str:
    """The target model decoding alone: a cold llama.cpp decode of the same GGUF, greedy (deterministic,
    so each prompt is decoded once for the whole scenario)."""
    model = _reference_model()
    model.reset()
    out = model.create_completion(prompt, max_tokens=max_tokens, temperature=0.0, top_k=1, repeat_penalty=1.0)
    return str(out["choices"][0]["text"])


class Scenario:
    """One SpeculativeDeployment from the local sample, applied to the e2e namespace."""

    def __init__(self, e2e: E2E) -> None:
        self.e2e = e2e
        self.manifest = yaml.safe_load(SAMPLE.read_text())
        self.manifest["metadata"]["namespace"] = NAMESPACE
        spec = self.manifest["spec"]
        # Profile on a few prompts of our own, handed over as a user does (a ConfigMap named in
        # spec.profiling.promptsConfigMap): the profiler's built-in set takes minutes more per draft.
        spec.setdefault("profiling", {})["promptsConfigMap"] = PROMPTS_CONFIG_MAP
        # One llama.cpp thread for the verifier too (its threads follow limits.cpu; the drafts and
        # profilers have threads: 1): make test runs the vLLM tier beside this one on the same two
        # cores, and ggml's threads spin while they wait for each other's share of them.
        spec["verifier"].setdefault("resources", {}).setdefault("limits", {})["cpu"] = "1"
        classes = [
            c for c in spec["deviceClasses"] if c["nodeSelector"].get(LABEL_DEVICE_CLASS) == DEVICE_CLASS
        ]
        assert classes, f"{SAMPLE} has no device class selecting {LABEL_DEVICE_CLASS}={DEVICE_CLASS}"
        self.name: str = self.manifest["metadata"]["name"]
        self.device_class: str = classes[0]["name"]
        self.target_name: str = spec["target"]["name"]
        self.draft_names = {d["name"] for d in spec["drafts"]}
        self.k_min: int = spec["speculativeLength"]["min"]
        self.k_max: int = spec["speculativeLength"]["max"]
        self.profiles_needed = sum(len(d["quantizations"]) for d in spec["drafts"])
        profiling = spec.get("profiling") or {}
        rounds = -(-self.profiles_needed // int(profiling.get("concurrencyPerClass", 1)))
        self.profiling_timeout_s = float(profiling.get("timeoutSeconds", 900)) * rounds + 120
        nodes = e2e.items("nodes", "-l", f"{LABEL_DEVICE_CLASS}={DEVICE_CLASS}")
        self.real_nodes = {n["metadata"]["name"] for n in nodes}
        assert self.real_nodes, f"no node is labelled {LABEL_DEVICE_CLASS}={DEVICE_CLASS}"

    # -- setup and teardown -------------------------------------------------------------------------
    def apply(self) -> None:
        self.e2e.kubectl("create", "namespace", NAMESPACE, check=False)
        prompts = "".join(json.dumps({"prompt": p}) + "\n" for p in PROFILING_PROMPTS)
        config_map = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": PROMPTS_CONFIG_MAP, "namespace": NAMESPACE},
            "data": {"prompts.jsonl": prompts},
        }
        self.e2e.kubectl("apply", "-f", "-", stdin=json.dumps(config_map))
        # Profiles measured by an earlier run would skip profiling: this scenario must profile.
        for profile in self._profiles():
            self.e2e.kubectl("delete", "edgeprofile", profile["metadata"]["name"], "--wait=true")
        self.e2e.kubectl("apply", "-f", "-", stdin=yaml.safe_dump(self.manifest))

    def delete(self) -> None:
        self.e2e.kubectl("delete", "specdeploy", self.name, "-n", NAMESPACE, "--wait=true", "--timeout=120s")

    def cleanup(self) -> None:
        self.e2e.kubectl("delete", "namespace", NAMESPACE, "--wait=false", check=False)

    # -- observations -------------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        body = self.e2e.get_json("specdeploy", self.name, "-n", NAMESPACE)
        return dict(body.get("status") or {})

    def _profiles(self) -> list[dict[str, Any]]:
        return [
            p
            for p in self.e2e.items("edgeprofiles")
            if p["spec"].get("deviceClass") == self.device_class
            and p["spec"].get("targetModel") == self.target_name
        ]

    def wait_for_profiles(self) -> list[dict[str, Any]]:
        """Every profile the deployment needs for the class (one per draft quantisation)."""

        def complete() -> list[dict[str, Any]] | None:
            profiles = self._profiles()
            return profiles if len(profiles) >= self.profiles_needed else None

        what = f"{self.profiles_needed} EdgeProfiles of class {self.device_class}"
        return list(self._wait(what, complete, self.profiling_timeout_s, every_s=5))

    def profiling_jobs(self) -> list[dict[str, Any]]:
        """The profiling Jobs once all have succeeded (a Job's status trails its pod's exit, which
        is when the operator publishes the profile)."""

        def succeeded() -> list[dict[str, Any]] | None:
            jobs = self.e2e.items("jobs", "-A", "-l", f"{LABEL_COMPONENT}=profiler")
            done = [j for j in jobs if j.get("status", {}).get("succeeded", 0) >= 1]
            return jobs if jobs and len(done) == len(jobs) else None

        return list(self._wait("every profiling Job to succeed (a finished Job is kept)", succeeded, 120))

    def pod_node_of_job(self, job: dict[str, Any]) -> str:
        uid = job["metadata"]["uid"]
        namespace = job["metadata"]["namespace"]
        pods = self.e2e.items("pods", "-n", namespace, "-l", f"batch.kubernetes.io/controller-uid={uid}")
        assert pods, f"the profiling Job {job['metadata']['name']} has no pod left to inspect"
        return str(pods[0]["spec"]["nodeName"])

    def wait_ready(self) -> dict[str, Any]:
        """Phase Ready and the draft DaemonSets settled: a surge rollout keeps the phase Ready while
        the old and the new pod both run, so wait until each node has its one updated pod."""

        def ready() -> dict[str, Any] | None:
            status = self.status()
            return status if status.get("phase") == "Ready" and self.drafts_settled() else None

        return dict(self._wait("phase Ready", ready, READY_TIMEOUT_S))

    def _wait(self, what: str, probe: Callable[[], Any], timeout_s: float, every_s: float = 1.0) -> Any:
        """:func:`wait_for`, failing with the deployment's status at the time of the failure."""
        try:
            return wait_for(what, probe, timeout_s, every_s)
        except AssertionError as error:
            raise AssertionError(f"{error}; status now: {self._brief()}") from None

    def _brief(self) -> str:
        with contextlib.suppress(AssertionError):
            status = self.status()
            conditions = "; ".join(
                f"{c['type']}={c['status']} {c.get('reason', '')}: {c.get('message', '')[:160]}"
                for c in status.get("conditions", [])
            )
            return f"phase={status.get('phase')} {conditions}"
        return "unreadable"

    def drafts_settled(self) -> bool:
        """Every draft DaemonSet rolled out: observed, all pods updated and ready, none extra."""
        sets = self.e2e.items(
            "daemonsets", "-n", NAMESPACE, "-l", f"{LABEL_COMPONENT}=draft,{LABEL_INSTANCE}={self.name}"
        )
        for ds in sets:
            state, desired = ds.get("status", {}), ds["status"].get("desiredNumberScheduled", -1)
            if state.get("observedGeneration") != ds["metadata"]["generation"]:
                return False
            counts = (
                state.get("updatedNumberScheduled"),
                state.get("numberReady"),
                state.get("currentNumberScheduled"),
            )
            if counts != (desired, desired, desired) or state.get("numberUnavailable", 0):
                return False
        pods = [p for p in self.draft_pods() if p["metadata"].get("deletionTimestamp") is None]
        return bool(sets) and len(pods) == sum(ds["status"]["desiredNumberScheduled"] for ds in sets)

    def draft_pods(self) -> list[dict[str, Any]]:
        return self.e2e.items(
            "pods", "-n", NAMESPACE, "-l", f"{LABEL_COMPONENT}=draft,{LABEL_INSTANCE}={self.name}"
        )

    def draft_pod(self) -> dict[str, Any]:
        pods = [p for p in self.draft_pods() if p["metadata"].get("deletionTimestamp") is None]
        assert len(pods) == 1, f"expected one draft pod on the class's one node, got {len(pods)}"
        return pods[0]

    def current_k(self) -> int:
        return int(self.status()["deviceClasses"][0]["selection"]["k"])

    def pin_k(self, k: int) -> None:
        """Pin K and keep only the selected draft and quantisation, so that K alone changes (a new
        K could otherwise make another draft the best, which rolls the DaemonSet by design)."""
        selection = self.status()["deviceClasses"][0]["selection"]
        drafts = [
            {
                **draft,
                "quantizations": [
                    q for q in draft["quantizations"] if q["quantization"] == selection["quantization"]
                ],
            }
            for draft in self.manifest["spec"]["drafts"]
            if draft["name"] == selection["draftModel"]
        ]
        patch = {"spec": {"speculativeLength": {"min": k, "max": k}, "drafts": drafts}}
        self.e2e.kubectl(
            "patch", "specdeploy", self.name, "-n", NAMESPACE, "--type=merge", "-p", json.dumps(patch)
        )

    def served_k(self) -> int | None:
        """K as the running draft server reports it (its ``edgespec_edge_speculative_length`` gauge)."""
        with self.port_forward(f"pod/{self.draft_pod()['metadata']['name']}", 8080) as port:
            # One short completion makes the server read its K file for a round.
            body = json.dumps(
                {"model": self.target_name, "prompt": "Hello", "max_tokens": 4, "temperature": 0}
            )
            request = urllib.request.Request(
                f"http://127.0.0.1:{port}/v1/completions",
                data=body.encode(),
                headers={"Content-Type": "application/json"},
            )
            urllib.request.urlopen(request, timeout=120).read()
            metrics = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30).read().decode()
        match = re.search(r"^edgespec_edge_speculative_length(?:\{[^}]*\})? (\S+)$", metrics, re.M)
        return int(float(match.group(1))) if match else None

    def wait_for_served_k(self, k: int) -> None:
        wait_for(
            f"the draft server to report K={k}", lambda: self.served_k() == k, READY_TIMEOUT_S, every_s=3
        )

    def wait_for_live_telemetry(self) -> dict[str, Any]:
        def live() -> dict[str, Any] | None:
            classes = self.status().get("deviceClasses", [])
            points = (classes[0].get("live") or {}).get("points", []) if classes else []
            rounds = sum(int(p.get("rounds", 0)) for p in points)
            return {"rounds": rounds, "points": points} if rounds else None

        return dict(wait_for("live telemetry in status.deviceClasses[].live", live, 180, every_s=3))

    def wait_no_pods(self) -> None:
        def gone() -> bool:
            pods = self.e2e.items("pods", "-n", NAMESPACE, "-l", f"{LABEL_INSTANCE}={self.name}")
            return not pods

        wait_for("every pod of the deployment to be gone", gone, 180)

    def running_containers(self) -> list[str]:
        """Containers the real nodes' kubelets still run for the namespace (kubelet's runtime view)."""
        names: list[str] = []
        for node in self.real_nodes:
            raw = self.e2e.kubectl("get", "--raw", f"/api/v1/nodes/{node}/proxy/runningpods/")
            for pod in json.loads(raw).get("items", []):
                if pod["metadata"].get("namespace") == NAMESPACE:
                    # A pod whose containers are gone but whose sandbox still runs comes with
                    # "containers": null; it is not gone yet either.
                    containers = pod["spec"].get("containers") or [{"name": "(sandbox)"}]
                    names += [f"{pod['metadata']['name']}/{c['name']}" for c in containers]
        return names

    def wait_no_running_containers(self) -> None:
        wait_for("no container of the namespace left on the node", lambda: not self.running_containers(), 180)

    # -- a client on the node, through the draft Service --------------------------------------------
    def start_looping_client(self) -> str:
        """A pod on the class's node that sends short completions to the draft Service in a loop
        (``internalTrafficPolicy: Local`` sends it to its own node's draft server) until told to
        stop, then prints one JSON line: ok and failed counts and each failure's time and error.
        It runs the draft pod's own image, so it needs nothing the cluster does not already hold."""
        draft = self.draft_pod()
        service = self.draft_service()
        url = f"http://{service['metadata']['name']}.{NAMESPACE}.svc:{service['spec']['ports'][0]['port']}"
        container = draft["spec"]["containers"][0]
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": LOOPING_CLIENT, "namespace": NAMESPACE},
            "spec": {
                "restartPolicy": "Never",
                "nodeName": draft["spec"]["nodeName"],
                "automountServiceAccountToken": False,
                "securityContext": {
                    "runAsNonRoot": True,
                    "runAsUser": 65532,
                    "seccompProfile": {"type": "RuntimeDefault"},
                },
                "containers": [
                    {
                        "name": "client",
                        "image": container["image"],
                        "imagePullPolicy": container.get("imagePullPolicy", "IfNotPresent"),
                        "command": ["python", "-c", LOOPING_CLIENT_SCRIPT, url, self.target_name],
                        "resources": {
                            "requests": {"cpu": "50m", "memory": "64Mi"},
                            "limits": {"memory": "128Mi"},
                        },
                        "securityContext": {
                            "allowPrivilegeEscalation": False,
                            "capabilities": {"drop": ["ALL"]},
                        },
                    }
                ],
            },
        }
        self.e2e.kubectl("delete", "pod", LOOPING_CLIENT, "-n", NAMESPACE, "--wait=true", check=False)
        self.e2e.kubectl("apply", "-f", "-", stdin=json.dumps(pod))

        def serving() -> bool:
            logs = self.e2e.kubectl("logs", LOOPING_CLIENT, "-n", NAMESPACE, check=False)
            return "first-ok" in logs

        self._wait("the looping client's first completion", serving, 180, every_s=2)
        return LOOPING_CLIENT

    def stop_looping_client(self) -> dict[str, Any]:
        """Tell the client to stop, wait for it to finish, and return its summary."""
        stop = ["python", "-c", "open('/tmp/stop', 'w')"]
        self.e2e.kubectl("exec", LOOPING_CLIENT, "-n", NAMESPACE, "--", *stop)

        def finished() -> dict[str, Any] | None:
            pod = self.e2e.get_json("pod", LOOPING_CLIENT, "-n", NAMESPACE)
            if pod["status"].get("phase") not in ("Succeeded", "Failed"):
                return None
            logs = self.e2e.kubectl("logs", LOOPING_CLIENT, "-n", NAMESPACE)
            summary = [line for line in logs.splitlines() if line.startswith("{")]
            assert summary, f"the looping client printed no summary: {logs[-2000:]}"
            return dict(json.loads(summary[-1]))

        return dict(self._wait("the looping client to finish", finished, 120, every_s=2))

    def draft_service(self) -> dict[str, Any]:
        services = self.e2e.items(
            "services", "-n", NAMESPACE, "-l", f"{LABEL_COMPONENT}=draft,{LABEL_INSTANCE}={self.name}"
        )
        assert services, "no draft Service"
        return services[0]

    def switch_draft(self) -> tuple[str, str]:
        """Make the class run the other draft of the sample (K stays pinned): the DaemonSet rolls."""
        selection = self.status()["deviceClasses"][0]["selection"]
        others = [d for d in self.manifest["spec"]["drafts"] if d["name"] != selection["draftModel"]]
        assert others, "the sample has a single draft: nothing to switch to"
        patch = {"spec": {"drafts": others[:1]}}
        self.e2e.kubectl(
            "patch", "specdeploy", self.name, "-n", NAMESPACE, "--type=merge", "-p", json.dumps(patch)
        )
        return selection["draftModel"], others[0]["name"]

    def wait_for_draft(self, draft: str) -> dict[str, Any]:
        """The class's one draft pod once it runs ``draft``, ready, and the old pod gone."""

        def rolled() -> dict[str, Any] | None:
            pods = self.draft_pods()
            if len(pods) != 1 or pods[0]["metadata"].get("deletionTimestamp"):
                return None
            pod = pods[0]
            statuses = pod["status"].get("containerStatuses", [])
            runs = pod["metadata"]["labels"].get(LABEL_DRAFT_MODEL) == draft  # sample names are label-safe
            return pod if runs and statuses and all(c["ready"] for c in statuses) else None

        what = f"the draft pod of {draft} to be the only one, ready"
        return dict(self._wait(what, rolled, READY_TIMEOUT_S))

    # -- metrics ------------------------------------------------------------------------------------
    def metric_names(self) -> dict[str, set[str]]:
        """Sample names each component's real pod exposes on ``/metrics``, through ``kubectl
        port-forward``: the draft server, the verifier and every ready operator replica (Prometheus
        scrapes the standby too, so its answer must be a valid exposition as well)."""
        draft = self.draft_pod()["metadata"]["name"]
        verifier = self.verifier_pods(terminating=True)
        operators = [
            p
            for p in self.e2e.items("pods", "-A", "-l", f"{LABEL_COMPONENT}=operator")
            if all(c.get("ready") for c in p["status"].get("containerStatuses", []))
        ]
        assert verifier and operators, "no verifier pod or no ready operator pod"
        targets = {
            "edge server": (NAMESPACE, f"pod/{draft}", 8080),
            "verifier": (NAMESPACE, f"pod/{verifier[0]['metadata']['name']}", 8000),
        }
        for operator in operators:
            port = next(
                port["containerPort"]
                for container in operator["spec"]["containers"]
                for port in container.get("ports", [])
                if port.get("name") == "metrics"
            )
            name = operator["metadata"]["name"]
            targets[f"operator {name}"] = (operator["metadata"]["namespace"], f"pod/{name}", port)
        names: dict[str, set[str]] = {}
        for component, (namespace, target, port) in targets.items():
            forward = port_forward(self.e2e.kubectl_path, self.e2e.kubeconfig, namespace, target, port)
            with forward as local:
                url = f"http://127.0.0.1:{local}/metrics"
                with urllib.request.urlopen(url, timeout=30) as reply:
                    names[component] = exposition_names(reply.read().decode())
        return names

    def verifier_pods(self, terminating: bool = False) -> list[dict[str, Any]]:
        """The deployment's verifier pods; those terminating too with ``terminating``."""
        pods = self.e2e.items(
            "pods", "-n", NAMESPACE, "-l", f"{LABEL_COMPONENT}=verifier,{LABEL_INSTANCE}={self.name}"
        )
        return [p for p in pods if terminating or p["metadata"].get("deletionTimestamp") is None]

    def scale_verifier(self, replicas: int, cpu_request: str) -> list[dict[str, Any]]:
        """What a user of a small node does: a smaller CPU request per verifier (the node has two
        cores), then ``kubectl scale`` (the scale subresource); waits for that many ready verifier
        pods, none terminating, and phase Ready."""
        patch = {"spec": {"verifier": {"resources": {"requests": {"cpu": cpu_request}}}}}
        body = json.dumps(patch)
        self.e2e.kubectl("patch", "specdeploy", self.name, "-n", NAMESPACE, "--type=merge", "-p", body)
        self.e2e.kubectl("scale", "specdeploy", self.name, "-n", NAMESPACE, f"--replicas={replicas}")

        def scaled() -> list[dict[str, Any]] | None:
            every = self.verifier_pods(terminating=True)
            ready = [
                p
                for p in every
                if p["metadata"].get("deletionTimestamp") is None
                and p["spec"]["containers"][0]["resources"].get("requests", {}).get("cpu") == cpu_request
                and all(c["ready"] for c in p["status"].get("containerStatuses", [{"ready": False}]))
            ]
            settled = len(every) == replicas and self.status().get("phase") == "Ready"
            return ready if len(ready) == replicas and settled else None

        return list(self._wait(f"{replicas} ready verifier pods", scaled, READY_TIMEOUT_S))

    def verifier_counters(self) -> dict[str, dict[str, float]]:
        """Per verifier pod: its rounds and the context tokens it computed, by kind (``prompt``,
        ``reread``), read from the pod's own ``/metrics``."""
        counters: dict[str, dict[str, float]] = {}
        for pod in self.verifier_pods():
            name = pod["metadata"]["name"]
            with (
                self.port_forward(f"pod/{name}", 8000) as local,
                urllib.request.urlopen(f"http://127.0.0.1:{local}/metrics", timeout=30) as reply,
            ):
                text = reply.read().decode()
            counters[name] = verifier_counters_of(text)
        return counters

    # -- clients ------------------------------------------------------------------------------------
    def port_forward(self, target: str, port: int) -> contextlib.AbstractContextManager[int]:
        return port_forward(self.e2e.kubectl_path, self.e2e.kubeconfig, NAMESPACE, target, port)

    @contextlib.contextmanager
    def openai_client(self) -> Iterator[Any]:
        """The official ``openai`` SDK pointed at the class's draft Service."""
        import openai

        services = self.e2e.items(
            "services", "-n", NAMESPACE, "-l", f"{LABEL_COMPONENT}=draft,{LABEL_INSTANCE}={self.name}"
        )
        assert services, "no draft Service"
        service = services[0]["metadata"]["name"]
        port = services[0]["spec"]["ports"][0]["port"]
        with self.port_forward(f"svc/{service}", port) as local:
            client = openai.OpenAI(base_url=f"http://127.0.0.1:{local}/v1", api_key="unused", timeout=300)
            try:
                yield client
            finally:
                client.close()


def verifier_counters_of(exposition: str) -> dict[str, float]:
    """``rounds`` and ``context_<kind>`` totals from a verifier's Prometheus exposition."""
    from prometheus_client.parser import text_string_to_metric_families

    out = {"rounds": 0.0, "context_prompt": 0.0, "context_reread": 0.0}
    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            if sample.name == "edgespec_verifier_rounds_total":
                out["rounds"] += sample.value
            elif sample.name == "edgespec_verifier_context_tokens_total":
                key = f"context_{sample.labels.get('kind', '')}"
                out[key] = out.get(key, 0.0) + sample.value
    return out
