"""spec.verifier.tls: the verifier serves HTTPS from the user's Secret; the edge trusts only a CA copy.

The verifier pod mounts the certificate and key and passes them to the verifier's ``--tls-*-file``
flags, and is probed over HTTPS; every edge pod (draft servers, profilers) reaches an https URL and
mounts the CA from a ConfigMap the operator writes, never the Secret (a node may read every Secret its
pods mount, and the verifier's private key has no business on an edge device). A new CA rolls the
draft servers, which read their CA file at start. (That each container's flags are accepted by the
real programs is tests/builders/test_container_contract.py.)
"""

from __future__ import annotations

from typing import Any

import pytest
from builder_samples import pod_spec
from edgespec.api.deployment import SpeculativeDeploymentSpec
from edgespec.builders import (
    DraftServerInput,
    ProfilingJobInput,
    VerifierInput,
    build_draft_daemon_set,
    build_draft_servers,
    build_profiling_job,
    build_verifier,
    build_verifier_ca_config_map,
)
from edgespec.builders.naming import verifier_ca_name
from edgespec.builders.podspec import CA_DIGEST_ANNOTATION, CA_FILE, TLS_CERT_FILE, TLS_KEY_FILE
from pydantic import ValidationError

SECRET = "demo-verifier-tls"
CA = "-----BEGIN CERTIFICATE-----\nCA-ONE\n-----END CERTIFICATE-----\n"


def with_tls(inp: Any, ca: str | None = CA) -> Any:
    data = inp.spec.to_api()
    data["verifier"]["tls"] = {"secretName": SECRET}
    spec = SpeculativeDeploymentSpec.model_validate(data)
    return inp.model_copy(update={"spec": spec, "verifier_ca": ca})


def env_of(container: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e["value"] for e in container["env"] if "value" in e}


def secrets_mounted(manifest: dict[str, Any]) -> set[str]:
    pod = pod_spec(manifest)
    assert pod is not None
    return {v["secret"]["secretName"] for v in pod["volumes"] if "secret" in v}


def test_the_verifier_serves_https_from_the_secret(verifier_input: VerifierInput) -> None:
    objects = build_verifier(with_tls(verifier_input))
    deployment = next(o for o in objects if o["kind"] == "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    args = container["args"]
    assert args[args.index("--tls-cert-file") + 1] == TLS_CERT_FILE
    assert args[args.index("--tls-key-file") + 1] == TLS_KEY_FILE
    assert args.index("--tls-key-file") < args.index("--")  # before vLLM's own arguments
    volume = next(v for v in pod["volumes"] if v.get("secret", {}).get("secretName") == SECRET)
    assert {i["key"] for i in volume["secret"]["items"]} == {"tls.crt", "tls.key"}
    mount = next(m for m in container["volumeMounts"] if m["name"] == volume["name"])
    assert mount["readOnly"] and TLS_CERT_FILE.startswith(mount["mountPath"] + "/")
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"]["scheme"] == "HTTPS", probe
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scheme"] == "https"
    service = next(o for o in objects if o["kind"] == "Service")
    assert service["spec"]["ports"][0]["appProtocol"] == "https"


def test_without_tls_nothing_changes(verifier_input: VerifierInput, draft_input: DraftServerInput) -> None:
    objects = build_verifier(verifier_input)
    assert [o["kind"] for o in objects] == ["Secret", "Deployment", "Service"]
    (container,) = objects[1]["spec"]["template"]["spec"]["containers"]
    assert "--tls-cert-file" not in container["args"]
    assert "scheme" not in container["readinessProbe"]["httpGet"]
    assert "appProtocol" not in objects[2]["spec"]["ports"][0]
    draft = build_draft_daemon_set(draft_input)
    (server,) = draft["spec"]["template"]["spec"]["containers"]
    assert env_of(server)["EDGESPEC_EDGE_VERIFIER_URL"].startswith("http://")
    assert "EDGESPEC_EDGE_CA_FILE" not in env_of(server)
    assert CA_DIGEST_ANNOTATION not in draft["spec"]["template"]["metadata"]["annotations"]


def test_the_ca_is_copied_alone_and_only_edge_pods_mount_it(
    verifier_input: VerifierInput, draft_input: DraftServerInput, profiling_input: ProfilingJobInput
) -> None:
    objects = build_verifier(with_tls(verifier_input))
    assert [o["kind"] for o in objects] == ["Secret", "ConfigMap", "Deployment", "Service"]  # CA first
    ca_map = objects[1]
    assert ca_map["metadata"]["name"] == verifier_ca_name(verifier_input.owner)
    assert ca_map["data"] == {"ca.crt": CA}  # no certificate of the verifier's own, no key
    edge = [*build_draft_servers(with_tls(draft_input)), build_profiling_job(with_tls(profiling_input))]
    workloads = [o for o in edge if pod_spec(o) is not None]
    assert len(workloads) == 2
    for workload in workloads:
        assert SECRET not in secrets_mounted(workload), workload["metadata"]["name"]
        pod = pod_spec(workload)
        assert pod is not None
        (main,) = pod["containers"]
        env = env_of(main)
        assert env["EDGESPEC_EDGE_VERIFIER_URL"].startswith("https://"), workload["kind"]
        assert env["EDGESPEC_EDGE_CA_FILE"] == CA_FILE
        volume = next(
            v
            for v in pod["volumes"]
            if "configMap" in v and v["configMap"]["name"] == ca_map["metadata"]["name"]
        )
        mount = next(m for m in main["volumeMounts"] if m["name"] == volume["name"])
        assert f"{mount['mountPath']}/{volume['configMap']['items'][0]['path']}" == CA_FILE
        for init in pod["initContainers"]:  # the model fetchers neither need nor get it
            assert all(m["name"] != volume["name"] for m in init["volumeMounts"])
    config = next(o for o in edge if o["kind"] == "ConfigMap")
    assert "verifierUrl: https://" in next(iter(config["data"].values()))


def test_a_new_ca_rolls_the_draft_servers(draft_input: DraftServerInput) -> None:
    def template(ca: str | None) -> dict[str, Any]:
        spec: dict[str, Any] = build_draft_daemon_set(with_tls(draft_input, ca))["spec"]["template"]
        return spec

    one, same, other = template(CA), template(CA), template(CA.replace("ONE", "TWO"))
    assert one == same  # re-applying the same CA is a no-op
    assert one != other
    assert (
        one["metadata"]["annotations"][CA_DIGEST_ANNOTATION]
        != other["metadata"]["annotations"][CA_DIGEST_ANNOTATION]
    )


def test_no_ca_config_map_until_the_ca_is_read(verifier_input: VerifierInput) -> None:
    """The Secret not issued yet: no empty CA is published; edge pods wait for the ConfigMap."""
    assert build_verifier_ca_config_map(with_tls(verifier_input, ca=None)) is None
    kinds = [o["kind"] for o in build_verifier(with_tls(verifier_input, ca=None))]
    assert kinds == ["Secret", "Deployment", "Service"]


@pytest.mark.parametrize("name", ["", "Upper", "-lead", "a/b", "x" * 254])
def test_a_bad_secret_name_is_refused(spec: SpeculativeDeploymentSpec, name: str) -> None:
    data = spec.to_api()
    data["verifier"]["tls"] = {"secretName": name}
    with pytest.raises(ValidationError, match="secretName"):
        SpeculativeDeploymentSpec.model_validate(data)


OPERATOR_CA = "-----BEGIN CERTIFICATE-----\nOPERATOR-CA\n-----END CERTIFICATE-----\n"


def test_an_https_telemetry_endpoint_is_trusted_through_the_same_ca_config_map(
    verifier_input: VerifierInput, draft_input: DraftServerInput
) -> None:
    """The chart's metrics.tls: draft servers verify the operator too; the bundle holds both CAs."""
    both = build_verifier(with_tls(verifier_input).model_copy(update={"operator_ca": OPERATOR_CA}))
    (ca_map,) = [o for o in both if o["kind"] == "ConfigMap"]
    assert ca_map["data"]["ca.crt"] == CA + OPERATOR_CA

    # the verifier on plain HTTP: the bundle is the operator's CA alone, the verifier URL stays http
    alone = build_verifier(verifier_input.model_copy(update={"operator_ca": OPERATOR_CA}))
    (ca_map,) = [o for o in alone if o["kind"] == "ConfigMap"]
    assert ca_map["data"] == {"ca.crt": OPERATOR_CA}
    draft = build_draft_daemon_set(draft_input.model_copy(update={"operator_ca": OPERATOR_CA}))
    (server,) = draft["spec"]["template"]["spec"]["containers"]
    assert env_of(server)["EDGESPEC_EDGE_CA_FILE"] == CA_FILE
    assert env_of(server)["EDGESPEC_EDGE_VERIFIER_URL"].startswith("http://")
    assert CA_DIGEST_ANNOTATION in draft["spec"]["template"]["metadata"]["annotations"]
    verifier = next(o for o in alone if o["kind"] == "Deployment")
    assert "--tls-cert-file" not in verifier["spec"]["template"]["spec"]["containers"][0]["args"]

    # the verifier's CA not read yet: nothing is published, even with the operator's at hand
    waiting = with_tls(verifier_input, ca=None).model_copy(update={"operator_ca": OPERATOR_CA})
    assert build_verifier_ca_config_map(waiting) is None
