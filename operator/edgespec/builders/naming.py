"""Names, labels and owner references shared by every manifest the operator builds.

Every child name is derived from its full identity, (namespace, deployment, role, class and what else
the role needs), as ``<readable prefix>-<hash>``: the prefix is for people (``demo-draft-rpi5``,
lower-cased, cut to fit), the 10 hex characters are SHA-256 over the raw identity parts joined by NUL
(a character no Kubernetes name or label can contain), so the encoding is injective and two distinct
identities share a name only if 40 bits of SHA-256 collide (about one chance in 10^12 for a thousand
children of one kind in one namespace). Before, names were hashed only when sanitising changed them,
and ``coll``/class ``draft-x`` and ``coll-draft``/class ``x`` both owned ``coll-draft-draft-x``.

Names are deterministic (a crash and a restart build the same names, so server-side apply converges
instead of duplicating), DNS-1035 labels (Services need a leading letter; every other kind accepts
them too) and at most 63 characters, because Services, Jobs (their name becomes the ``job-name``
label) and DaemonSet pods all inherit the name into places capped at 63.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from edgespec.api.base import API_VERSION
from edgespec.api.profile import LABEL_DEVICE_CLASS, label_value

MAX_NAME = 63
HASH_CHARS = 10

MANAGED_BY = "edgespec"
APP_NAME = "edgespec"
LABEL_NAME = "app.kubernetes.io/name"
LABEL_INSTANCE = "app.kubernetes.io/instance"
LABEL_COMPONENT = "app.kubernetes.io/component"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
LABEL_DEPLOYMENT = "edgespec.dev/deployment"

Component = Literal["verifier", "draft", "profiler"]

_NOT_DNS = re.compile(r"[^a-z0-9-]+")
_DASHES = re.compile(r"-{2,}")


class Owner(BaseModel):
    """The object that owns the children: normally the ``SpeculativeDeployment`` being reconciled."""

    model_config = ConfigDict(frozen=True)

    api_version: str = API_VERSION
    kind: str = "SpeculativeDeployment"
    name: str = Field(min_length=1, max_length=253)
    namespace: str = Field(min_length=1, max_length=63)
    uid: str = Field(min_length=1)

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> Owner:
        """The owner from an object as the API server returns it (``apiVersion``, ``kind``, ``metadata``)."""
        meta = body["metadata"]
        return cls(
            api_version=body.get("apiVersion", API_VERSION),
            kind=body.get("kind", "SpeculativeDeployment"),
            name=meta["name"],
            namespace=meta["namespace"],
            uid=meta["uid"],
        )

    def reference(self) -> dict[str, Any]:
        """This owner as a controller owner reference (garbage collection deletes the children)."""
        return {
            "apiVersion": self.api_version,
            "kind": self.kind,
            "name": self.name,
            "uid": self.uid,
            "controller": True,
            "blockOwnerDeletion": True,
        }


def owner_reference(body: Mapping[str, Any]) -> dict[str, Any]:
    """Controller owner reference to ``body`` (an object with apiVersion, kind, metadata.name/uid)."""
    meta = body["metadata"]
    return {
        "apiVersion": body["apiVersion"],
        "kind": body["kind"],
        "name": meta["name"],
        "uid": meta["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def _short_hash(text: str, chars: int = HASH_CHARS) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:chars]


def _hashed(readable_parts: tuple[str, ...], identity: tuple[str, ...]) -> str:
    """``<readable parts, sanitised and cut>-<hash of identity>``, a DNS-1035 label of at most 63."""
    if any(not p for p in identity):
        raise ValueError(f"name parts must be non-empty, got {identity!r}")
    suffix = "-" + _short_hash("\x00".join(identity))  # NUL: in no name, so the join is injective
    readable = _DASHES.sub("-", _NOT_DNS.sub("-", "-".join(readable_parts).lower())).strip("-")
    if not readable or not readable[0].isalpha():
        readable = f"es-{readable}".rstrip("-")  # Services need a leading letter (DNS-1035)
    return readable[: MAX_NAME - len(suffix)].rstrip("-") + suffix


def dns_name(*parts: str) -> str:
    """``parts`` as a DNS-1035 label of at most 63 characters, always ending in their hash.

    The hash covers the raw parts, so it is the identity; the prefix before it is only for reading
    (``demo-draft-rpi5-1a2b3c4d5e``).
    """
    if not parts:
        raise ValueError("name parts must be non-empty")
    return _hashed(parts, parts)


def child_name(owner: Owner, role: str, *parts: str) -> str:
    """The name of one child: its role and ``parts`` (class, draft, ...) under the full owner identity.

    The readable prefix is ``<deployment>-<role>[-<parts>]``; the namespace is hashed but not shown.
    """
    return _hashed((owner.name, role, *parts), (owner.namespace, owner.name, role, *parts))


def verifier_name(owner: Owner) -> str:
    """Name of the verifier's Deployment and Service."""
    return child_name(owner, "verifier")


def verifier_secret_name(owner: Owner) -> str:
    """Name of the Secret holding the verifier's bearer token."""
    return child_name(owner, "verifier-token")


def drafts_service_name(owner: Owner) -> str:
    """Name of the deployment's one node-local Service in front of its draft servers."""
    return child_name(owner, "draft")


def draft_name(owner: Owner, device_class: str) -> str:
    """Name of a device class's draft DaemonSet and its ConfigMap.

    The draft model and quantisation are deliberately not part of it: a new choice rolls the same
    DaemonSet instead of creating a second one next to the old.
    """
    return child_name(owner, "draft", device_class)


def profiling_job_name(owner: Owner, device_class: str, draft_model: str, quantization: str) -> str:
    """Name of the profiling Job of one (device class, draft model, quantisation)."""
    return child_name(owner, "profile", device_class, draft_model, quantization)


def verifier_ca_name(owner: Owner) -> str:
    """Name of the ConfigMap holding the CA that edge pods verify the verifier's certificate against."""
    return child_name(owner, "verifier-ca")


def verifier_url(owner: Owner, port: int, tls: bool = False) -> str:
    """In-cluster URL of the verifier Service (no cluster domain, so any ``--cluster-domain`` works).

    With ``tls`` it is https: the verifier's certificate must name this host."""
    scheme = "https" if tls else "http"
    return f"{scheme}://{verifier_name(owner)}.{owner.namespace}.svc:{port}"


def verifier_selector(owner: Owner) -> str:
    """The verifier pods' label selector as a string (a=b,c=d): the scale subresource's selector."""
    return ",".join(f"{key}={value}" for key, value in selector_labels(owner, "verifier").items())


def selector_labels(owner: Owner, component: Component, device_class: str | None = None) -> dict[str, str]:
    """The immutable subset of labels a workload selects its pods by."""
    labels = {
        LABEL_NAME: APP_NAME,
        LABEL_INSTANCE: label_value(owner.name),
        LABEL_COMPONENT: component,
    }
    if device_class is not None:
        labels[LABEL_DEVICE_CLASS] = label_value(device_class)
    return labels


def common_labels(owner: Owner, component: Component, device_class: str | None = None) -> dict[str, str]:
    """Labels every child carries: the recommended ``app.kubernetes.io/*`` set plus edgespec's own."""
    return {
        **selector_labels(owner, component, device_class),
        LABEL_MANAGED_BY: MANAGED_BY,
        LABEL_DEPLOYMENT: label_value(owner.name),
    }


def object_meta(
    owner: Owner,
    name: str,
    component: Component,
    device_class: str | None = None,
    extra_labels: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """``metadata`` of a namespaced child: name, namespace, labels and the controller owner reference."""
    return {
        "name": name,
        "namespace": owner.namespace,
        "labels": {**common_labels(owner, component, device_class), **(extra_labels or {})},
        "ownerReferences": [owner.reference()],
    }
