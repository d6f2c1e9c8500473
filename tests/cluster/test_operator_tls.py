"""spec.verifier.tls against the real API server: the children carry the certificate and the CA.

The operator runs as a real process. A deployment names a TLS Secret that does not exist yet: the
verifier Deployment already mounts it and serves HTTPS (flags, probes), but no CA ConfigMap is
published and the draft servers wait for it. Once a cert-manager-shaped Secret appears, the operator
copies its ``ca.crt`` (alone) into the CA ConfigMap on its own, and the draft DaemonSet and its pods
on the emulated Pis mount that ConfigMap, never the Secret, with an https verifier URL. A new CA is
copied on and rolls the draft servers' template. Profiling Jobs, the other edge workload, mount the
same copy.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
from edgespec.api.profile import EdgeProfile, EdgeProfileSpec
from edgespec.builders.naming import draft_name, verifier_ca_name, verifier_name
from edgespec.builders.podspec import CA_DIGEST_ANNOTATION, CA_FILE
from edgespec.configspec import load_profiles
from kube_helpers import get_object, owner_of, status_of, wait_for

pytestmark = pytest.mark.cluster
ROOT = Path(__file__).resolve().parents[2]
NAME, SECRET = "tls-demo", "tls-demo-verifier"
TARGET, DRAFT, QUANT = "llama-3.1-70b", "llama-3.2-1b", "Q4_K_M"
CA_ONE = "-----BEGIN CERTIFICATE-----\nCA-ONE\n-----END CERTIFICATE-----\n"


def apply(cluster: Any, doc: dict[str, Any]) -> None:
    cluster.kubectl("apply", "-f", "-", input=json.dumps(doc))


def tls_secret(ca: str) -> dict[str, Any]:
    """What a cert-manager Certificate writes (the API server does not parse the PEM)."""
    data = {"tls.crt": "CERT", "tls.key": "KEY", "ca.crt": ca}
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "kubernetes.io/tls",
        "metadata": {"name": SECRET, "namespace": "default"},
        "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()},
    }


def pod_template(cluster: Any, kind: str, name: str) -> dict[str, Any]:
    template: dict[str, Any] = get_object(cluster, kind, name).get("spec", {}).get("template", {})
    return template


@pytest.fixture
def profiles(operator: Any) -> None:
    source = next(
        p
        for p in load_profiles([ROOT / "samples" / "profiles" / "paper-illustrative.yaml"])
        if (p.device_class, p.draft_model, p.quantization) == ("rpi5", DRAFT, QUANT)
    )
    profile = EdgeProfile.for_spec(EdgeProfileSpec.model_validate(source.model_dump())).to_api()
    apply(operator, profile)


def test_the_children_carry_the_certificate_and_the_ca(operator: Any, profiles: None) -> None:
    cluster = operator
    owner = owner_of(NAME)
    doc = {
        "apiVersion": "edgespec.dev/v1alpha1",
        "kind": "SpeculativeDeployment",
        "metadata": {"name": NAME, "namespace": "default"},
        "spec": {
            "target": {"name": TARGET, "priceUsdPerMillionTokens": 0.9, "vllmModel": "m"},
            "verifier": {"tls": {"secretName": SECRET}},
            "drafts": [
                {"name": DRAFT, "quantizations": [{"quantization": QUANT, "source": {"uri": "pypi:d"}}]}
            ],
            "deviceClasses": [{"name": "rpi5", "nodeSelector": {"edgespec.dev/device-class": "rpi5"}}],
            "profiling": {"enabled": False},
        },
    }
    apply(cluster, doc)
    try:
        # Before the Secret exists: the verifier is built for HTTPS, the drafts wait for the CA.
        verifier = wait_for(
            "the verifier Deployment", lambda: pod_template(cluster, "deployment", verifier_name(owner)), 60
        )
        (container,) = verifier["spec"]["containers"]
        assert "--tls-cert-file" in container["args"] and "--tls-key-file" in container["args"]
        assert container["readinessProbe"]["httpGet"]["scheme"] == "HTTPS"
        volumes = {v["name"]: v for v in verifier["spec"]["volumes"]}
        assert any(v.get("secret", {}).get("secretName") == SECRET for v in volumes.values())
        daemon_set = wait_for(
            "the draft DaemonSet", lambda: pod_template(cluster, "daemonset", draft_name(owner, "rpi5")), 60
        )
        assert get_object(cluster, "configmap", verifier_ca_name(owner)) == {}
        assert CA_DIGEST_ANNOTATION not in daemon_set["metadata"].get("annotations", {})
        assert status_of(cluster, NAME)["verifier"]["endpoint"].startswith("https://")

        # cert-manager issues: the CA is copied on without any change to the deployment
        apply(cluster, tls_secret(CA_ONE))
        ca_map = wait_for(
            "the CA ConfigMap", lambda: get_object(cluster, "configmap", verifier_ca_name(owner)), 60
        )
        assert ca_map["data"] == {"ca.crt": CA_ONE}
        daemon_set = wait_for(
            "the draft template to carry the CA digest",
            lambda: (
                (t := pod_template(cluster, "daemonset", draft_name(owner, "rpi5")))
                and CA_DIGEST_ANNOTATION in t["metadata"].get("annotations", {})
                and t
            ),
            30,
        )
        first_digest = daemon_set["metadata"]["annotations"][CA_DIGEST_ANNOTATION]

        # the pods the DaemonSet made on the emulated Pis mount the CA copy, never the Secret
        def draft_pods() -> list[dict[str, Any]]:
            selector = f"app.kubernetes.io/instance={NAME},app.kubernetes.io/component=draft"
            out = cluster.kubectl("get", "pods", "-n", "default", "-l", selector, "-o", "json").stdout
            pods = [
                p
                for p in json.loads(out)["items"]
                if p["metadata"].get("annotations", {}).get(CA_DIGEST_ANNOTATION) == first_digest
            ]
            return pods

        pods = wait_for("draft pods with the CA", draft_pods, 60)
        for pod in pods:
            spec = pod["spec"]
            secrets = {v["secret"]["secretName"] for v in spec["volumes"] if "secret" in v}
            assert SECRET not in secrets, pod["metadata"]["name"]
            (main,) = spec["containers"]
            env = {e["name"]: e.get("value") for e in main["env"]}
            assert env["EDGESPEC_EDGE_CA_FILE"] == CA_FILE
            assert env["EDGESPEC_EDGE_VERIFIER_URL"].startswith(
                f"https://{verifier_name(owner)}.default.svc:"
            )
            ca_volume = next(
                v for v in spec["volumes"] if v.get("configMap", {}).get("name") == ca_map["metadata"]["name"]
            )
            assert any(m["name"] == ca_volume["name"] for m in main["volumeMounts"])

        # a new CA is copied on at the next reconcile (here: a touch of the deployment) and rolls the drafts
        apply(cluster, tls_secret(CA_ONE.replace("ONE", "TWO")))
        cluster.kubectl("annotate", "specdeploy", NAME, "-n", "default", "touched=1", "--overwrite")
        wait_for(
            "the new CA in the ConfigMap",
            lambda: (
                "CA-TWO"
                in get_object(cluster, "configmap", verifier_ca_name(owner)).get("data", {}).get("ca.crt", "")
            ),
            60,
        )
        wait_for(
            "the draft template to roll",
            lambda: (
                pod_template(cluster, "daemonset", draft_name(owner, "rpi5"))["metadata"]["annotations"][
                    CA_DIGEST_ANNOTATION
                ]
                != first_digest
            ),
            30,
        )
    finally:
        cluster.kubectl("delete", "specdeploy", NAME, "-n", "default", "--ignore-not-found", check=False)
        cluster.kubectl("delete", "secret", SECRET, "-n", "default", "--ignore-not-found", check=False)


def test_profiling_jobs_verify_the_verifier_against_the_ca_copy(operator: Any) -> None:
    cluster, name = operator, "tls-profiled"
    owner = owner_of(name)
    secret = {**tls_secret(CA_ONE), "metadata": {"name": f"{name}-tls", "namespace": "default"}}
    apply(cluster, secret)
    doc = {
        "apiVersion": "edgespec.dev/v1alpha1",
        "kind": "SpeculativeDeployment",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "target": {"name": TARGET, "priceUsdPerMillionTokens": 0.9, "vllmModel": "m"},
            "verifier": {"tls": {"secretName": f"{name}-tls"}},
            # no profile exists for this draft: the operator starts profiling Jobs on the Pis
            "drafts": [
                {
                    "name": "unprofiled",
                    "quantizations": [{"quantization": QUANT, "source": {"uri": "pypi:u"}}],
                }
            ],
            "deviceClasses": [{"name": "rpi5", "nodeSelector": {"edgespec.dev/device-class": "rpi5"}}],
        },
    }
    apply(cluster, doc)
    try:

        def jobs() -> list[dict[str, Any]]:
            selector = f"app.kubernetes.io/instance={name},app.kubernetes.io/component=profiler"
            out = cluster.kubectl("get", "jobs", "-n", "default", "-l", selector, "-o", "json").stdout
            return list(json.loads(out)["items"])

        (job, *_) = wait_for("a profiling Job", jobs, 60)
        spec = job["spec"]["template"]["spec"]
        secrets = {v["secret"]["secretName"] for v in spec["volumes"] if "secret" in v}
        assert f"{name}-tls" not in secrets
        (main,) = spec["containers"]
        env = {e["name"]: e.get("value") for e in main["env"]}
        assert env["EDGESPEC_EDGE_VERIFIER_URL"].startswith("https://")
        assert env["EDGESPEC_EDGE_CA_FILE"] == CA_FILE
        ca_volume = next(
            v for v in spec["volumes"] if v.get("configMap", {}).get("name") == verifier_ca_name(owner)
        )
        assert any(m["name"] == ca_volume["name"] for m in main["volumeMounts"])
        ca_map = wait_for(
            "the CA ConfigMap", lambda: get_object(cluster, "configmap", verifier_ca_name(owner)), 30
        )
        assert ca_map["data"] == {"ca.crt": CA_ONE}
    finally:
        cluster.kubectl("delete", "specdeploy", name, "-n", "default", "--ignore-not-found", check=False)
        cluster.kubectl("delete", "secret", f"{name}-tls", "-n", "default", "--ignore-not-found", check=False)
