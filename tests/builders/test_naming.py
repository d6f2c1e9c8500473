"""Child names: deterministic, DNS-1035 safe, at most 63 characters, distinct for distinct inputs."""

from __future__ import annotations

import re

import pytest
from edgespec.builders import Owner, owner_reference
from edgespec.builders.naming import (
    dns_name,
    draft_name,
    profiler_cluster_role_binding_name,
    profiling_job_name,
    verifier_name,
    verifier_url,
)

DNS_1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
LONG = "a-very-long-deployment-name-that-someone-typed-" + "x" * 150


def owner(name: str, namespace: str = "ns") -> Owner:
    return Owner(name=name, namespace=namespace, uid="uid-1")


@pytest.mark.parametrize("name", ["demo", "9lives", LONG, "a" * 253])
def test_names_are_dns_1035_and_at_most_63(name: str) -> None:
    o = owner(name)
    for child in (
        verifier_name(o),
        draft_name(o, "rpi5"),
        draft_name(o, "jetson-orin-nano-super-devkit-8gb"),
        profiling_job_name(o, "jetson-orin-nano-super-devkit-8gb", "gemma-3-270m.17blocks", "Q4_K_M"),
        profiler_cluster_role_binding_name(o),
    ):
        assert len(child) <= 63, child
        assert DNS_1035.match(child), child


def test_short_clean_names_stay_readable_and_are_stable() -> None:
    o = owner("demo")
    assert verifier_name(o) == "demo-verifier"
    assert draft_name(o, "rpi5") == "demo-draft-rpi5"
    assert draft_name(o, "rpi5") == draft_name(owner("demo"), "rpi5")
    assert verifier_url(o, 8000) == "http://demo-verifier.ns.svc:8000"


def test_truncated_names_stay_distinct() -> None:
    a, b = owner(LONG + "-one"), owner(LONG + "-two")
    assert draft_name(a, "rpi5") != draft_name(b, "rpi5")
    assert len(draft_name(a, "rpi5")) == 63


def test_lossy_sanitising_cannot_collide() -> None:
    o = owner("demo")
    # Q4_K_M and q4-k-m both read "q4-k-m"; the hash over the raw parts keeps them apart
    first = profiling_job_name(o, "rpi5", "gemma", "Q4_K_M")
    second = profiling_job_name(o, "rpi5", "gemma", "q4-k-m")
    assert first != second
    assert first.startswith("demo-profile-rpi5-gemma-q4-k-m-")
    assert dns_name("a.b") != dns_name("a-b")


def test_binding_name_depends_on_namespace() -> None:
    assert profiler_cluster_role_binding_name(owner("demo", "a")) != profiler_cluster_role_binding_name(
        owner("demo", "b")
    )


def test_owner_reference_from_body() -> None:
    body = {
        "apiVersion": "edgespec.dev/v1alpha1",
        "kind": "SpeculativeDeployment",
        "metadata": {"name": "demo", "namespace": "ns", "uid": "u-1", "generation": 3},
    }
    expected = {
        "apiVersion": "edgespec.dev/v1alpha1",
        "kind": "SpeculativeDeployment",
        "name": "demo",
        "uid": "u-1",
        "controller": True,
        "blockOwnerDeletion": True,
    }
    assert owner_reference(body) == expected
    assert Owner.from_body(body).reference() == expected
