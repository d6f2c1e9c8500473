"""Child names: deterministic, DNS-1035, at most 63 characters, a hash of the full identity."""

from __future__ import annotations

import re

import pytest
from edgespec.builders import Owner, owner_reference
from edgespec.builders.naming import (
    draft_name,
    drafts_service_name,
    profiling_job_name,
    verifier_name,
    verifier_secret_name,
    verifier_url,
)
from hypothesis import given, settings
from hypothesis import strategies as st

DNS_1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
LONG = "a-very-long-deployment-name-that-someone-typed-" + "x" * 150

# What the API server admits: namespaces and classes are DNS-1123 labels, deployment names
# DNS-1123 subdomains (dots allowed, up to 253), drafts and quantisations free-form.
_LABEL = st.from_regex(r"\A[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?\Z")
_SUBDOMAIN = st.lists(_LABEL, min_size=1, max_size=3).map(".".join)
_FREE = st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9._-]{0,15}\Z")


def owner(name: str, namespace: str = "ns") -> Owner:
    return Owner(name=name, namespace=namespace, uid="uid-1")


def children(o: Owner, device_class: str, draft: str, quant: str) -> dict[tuple[str, str], str]:
    """Every name the operator gives a child of ``o``, by (kind group, identity)."""
    return {
        ("verifier", ""): verifier_name(o),
        ("secret", ""): verifier_secret_name(o),
        ("service", "drafts"): drafts_service_name(o),
        ("draft", device_class): draft_name(o, device_class),
        ("job", f"{device_class}\0{draft}\0{quant}"): profiling_job_name(o, device_class, draft, quant),
    }


@pytest.mark.parametrize("name", ["demo", "9lives", LONG, "a" * 253])
def test_names_are_dns_1035_and_at_most_63(name: str) -> None:
    o = owner(name)
    for child in children(o, "jetson-orin-nano-super-devkit-8gb", "gemma-3-270m.17blocks", "Q4_K_M").values():
        assert len(child) <= 63, child
        assert DNS_1035.match(child), child


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(_LABEL, _SUBDOMAIN, _LABEL, _FREE, _FREE),
        min_size=2,
        max_size=12,
        unique=True,
    )
)
def test_no_two_identities_share_a_name(identities: list[tuple[str, str, str, str, str]]) -> None:
    """Over random (namespace, deployment, class, draft, quantisation): one name per identity.

    Names of one kind must differ within a namespace (the operator makes no cluster-scoped
    children); a name that two different identities map to is a collision.
    """
    seen: dict[tuple[str, str, str], tuple[str, ...]] = {}
    for namespace, deployment, cls, draft, quant in identities:
        o = owner(deployment, namespace)
        for (group, part), name in children(o, cls, draft, quant).items():
            assert len(name) <= 63 and DNS_1035.match(name), name
            identity = (namespace, deployment, group, part)
            first = seen.setdefault((group, namespace, name), identity)
            assert first == identity, f"{name!r} names both {first} and {identity}"


def test_the_reported_collision_pairs_get_distinct_names() -> None:
    # Same namespace: deployment "coll" class "draft-x" against deployment "coll-draft" class "x".
    assert draft_name(owner("coll", "ns"), "draft-x") != draft_name(owner("coll-draft", "ns"), "x")
    # Across namespaces: "a-b"/"c" and "a"/"b-c" shared one profiler ClusterRoleBinding; there are no
    # cluster-scoped children now, and their names differ anyway (the namespace is hashed).
    job = ("x", "d", "q")
    assert profiling_job_name(owner("c", "a-b"), *job) != profiling_job_name(owner("b-c", "a"), *job)
    # A verifier of "a-draft" against the draft servers of class "verifier" of "a".
    assert verifier_name(owner("a-draft")) != draft_name(owner("a"), "verifier")


def test_names_are_stable_and_readable() -> None:
    o = owner("demo")
    assert draft_name(o, "rpi5") == draft_name(owner("demo"), "rpi5")
    assert re.fullmatch(r"demo-draft-rpi5-[0-9a-f]{10}", draft_name(o, "rpi5"))
    assert re.fullmatch(r"demo-verifier-[0-9a-f]{10}", verifier_name(o))
    assert verifier_url(o, 8000) == f"http://{verifier_name(o)}.ns.svc:8000"
    assert draft_name(o, "rpi5") != draft_name(owner("demo", "other"), "rpi5")  # namespace hashed


def test_lossy_sanitising_cannot_collide() -> None:
    o = owner("demo")
    # Q4_K_M and q4-k-m both read "q4-k-m"; the hash over the raw parts keeps them apart
    first = profiling_job_name(o, "rpi5", "gemma", "Q4_K_M")
    second = profiling_job_name(o, "rpi5", "gemma", "q4-k-m")
    assert first != second
    assert first.startswith("demo-profile-rpi5-gemma-q4-k-m-")


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
