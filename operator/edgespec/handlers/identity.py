"""Who is reporting telemetry: a draft pod, proved by its projected ServiceAccount token.

Every draft pod mounts a ServiceAccount token the kubelet projects for it: audience
``TELEMETRY_AUDIENCE`` (so the API server itself refuses it, and it is worth nothing anywhere but
here), valid for ``TELEMETRY_TOKEN_SECONDS`` and rotated by the kubelet before it expires, bound to
the pod (and through it to the pod's node): the token stops being valid when the pod is deleted.
The operator checks it with the TokenReview API. The review's
``status.user.extra`` names the pod and the node the token was issued for; the operator then reads
that pod and requires that it is the same pod (uid), on that node, with that ServiceAccount, and a
draft server of one device class of one deployment (its controller is that class's DaemonSet and
its labels are that class's selector). That class is the only one it may report for.

``reporter_of`` is pure. ``TokenReviewer`` does the two API calls and remembers a verified token
for ``REVIEW_TTL_S`` (by its SHA-256, at most ``MAX_REVIEWS`` of them), so a server reporting every
30 s costs the API server one review and one pod read a minute at most.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from lightkube import ApiError, AsyncClient
from lightkube.models.authentication_v1 import TokenReviewSpec
from lightkube.resources.authentication_v1 import TokenReview
from lightkube.resources.core_v1 import Pod

from edgespec.builders.naming import Owner, draft_name, selector_labels
from edgespec.handlers.metrics import OperatorMetrics
from edgespec.live import TELEMETRY_AUDIENCE

log = logging.getLogger("edgespec.identity")

EXTRA_POD_NAME = "authentication.kubernetes.io/pod-name"
EXTRA_POD_UID = "authentication.kubernetes.io/pod-uid"
EXTRA_NODE_NAME = "authentication.kubernetes.io/node-name"
SA_PREFIX = "system:serviceaccount:"

REVIEW_TTL_S = 60.0
MAX_REVIEWS = 4096


class ReviewUnavailable(Exception):
    """The API server could not review the token (down, throttling): the caller should retry."""


@dataclass(frozen=True)
class PodIdentity:
    """A pod whose token the API server vouched for, as the operator read it back."""

    namespace: str
    name: str
    node: str
    labels: Mapping[str, str]
    controller: tuple[str, str] | None  # (kind, name) of its controller owner reference


@dataclass(frozen=True)
class Reporter:
    """What a pod may report for: one class of one deployment, from one node."""

    namespace: str
    deployment: str
    device_class: str
    pod: str
    node: str


def reporter_of(
    pod: PodIdentity, deployments: Mapping[tuple[str, str], Mapping[str, Any]]
) -> Reporter | None:
    """The (deployment, class) ``pod`` serves drafts for, or None when it is no draft server of ours."""
    if pod.controller is None or pod.controller[0] != "DaemonSet":
        return None
    for (namespace, name), body in deployments.items():
        if namespace != pod.namespace:
            continue
        owner = Owner(namespace=namespace, name=name, uid=str(body.get("metadata", {}).get("uid") or "-"))
        for cls in (body.get("spec") or {}).get("deviceClasses") or []:
            device_class = str(cls.get("name") or "")
            if not device_class or draft_name(owner, device_class) != pod.controller[1]:
                continue
            wanted = selector_labels(owner, "draft", device_class)
            if all(pod.labels.get(k) == v for k, v in wanted.items()):
                return Reporter(namespace, name, device_class, pod.name, pod.node)
    return None


def _one(extra: Mapping[str, Any], key: str) -> str:
    values = extra.get(key) or []
    return str(values[0]) if len(values) == 1 else ""


def identity_from_review(status: Mapping[str, Any], pod: Mapping[str, Any] | None) -> PodIdentity | None:
    """The pod a TokenReview status vouches for, checked against the pod as read (pure).

    None unless: authenticated for ``TELEMETRY_AUDIENCE``, a ServiceAccount of the pod's namespace,
    the pod's own ServiceAccount, the same pod uid, and the token's node is the pod's node.
    """
    if not status.get("authenticated") or TELEMETRY_AUDIENCE not in (status.get("audiences") or []):
        return None
    user = status.get("user") or {}
    username = str(user.get("username") or "")
    if not username.startswith(SA_PREFIX) or pod is None:
        return None
    namespace, _, account = username[len(SA_PREFIX) :].partition(":")
    extra = user.get("extra") or {}
    meta, spec = pod.get("metadata") or {}, pod.get("spec") or {}
    node = _one(extra, EXTRA_NODE_NAME)
    if (
        meta.get("namespace") != namespace
        or meta.get("name") != _one(extra, EXTRA_POD_NAME)
        or not meta.get("uid")
        or meta.get("uid") != _one(extra, EXTRA_POD_UID)
        or (spec.get("serviceAccountName") or "default") != account
        or not node
        or spec.get("nodeName") != node
    ):
        return None
    controller = next(
        (
            (str(r.get("kind")), str(r.get("name")))
            for r in meta.get("ownerReferences") or []
            if r.get("controller")
        ),
        None,
    )
    return PodIdentity(namespace, str(meta["name"]), node, dict(meta.get("labels") or {}), controller)


class TokenReviewer:
    """Bearer token -> the draft pod it was projected for, via TokenReview and a read of the pod."""

    def __init__(
        self,
        client: AsyncClient,
        metrics: OperatorMetrics,
        ttl_s: float = REVIEW_TTL_S,
        max_entries: int = MAX_REVIEWS,
    ) -> None:
        self.client = client
        self.metrics = metrics
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self._known: OrderedDict[str, tuple[float, PodIdentity]] = OrderedDict()

    async def __call__(self, token: str) -> PodIdentity | None:
        if not token:
            return None
        digest = hashlib.sha256(token.encode()).hexdigest()
        known = self._known.get(digest)
        if known is not None and known[0] > time.monotonic():
            return known[1]
        self._known.pop(digest, None)
        identity = await self._review(token)
        if identity is not None:
            self._known[digest] = (time.monotonic() + self.ttl_s, identity)
            while len(self._known) > self.max_entries:
                self._known.popitem(last=False)
        return identity

    async def _review(self, token: str) -> PodIdentity | None:
        self.metrics.api_requests.labels("create", "tokenreviews").inc()
        try:
            review = await self.client.create(
                TokenReview(spec=TokenReviewSpec(token=token, audiences=[TELEMETRY_AUDIENCE]))
            )
        except ApiError as exc:
            raise ReviewUnavailable(f"TokenReview failed: {exc.status.message}") from exc
        status = review.to_dict().get("status") or {}
        if not status.get("authenticated"):
            return None
        extra = (status.get("user") or {}).get("extra") or {}
        username = str((status.get("user") or {}).get("username") or "")
        namespace = username[len(SA_PREFIX) :].partition(":")[0] if username.startswith(SA_PREFIX) else ""
        pod_name = _one(extra, EXTRA_POD_NAME)
        if not namespace or not pod_name:
            return None  # not a pod-bound ServiceAccount token
        self.metrics.api_requests.labels("get", "pods").inc()
        try:
            pod: Mapping[str, Any] | None = (
                await self.client.get(Pod, pod_name, namespace=namespace)
            ).to_dict()
        except ApiError as exc:
            if exc.status.code != 404:
                raise ReviewUnavailable(
                    f"cannot read pod {namespace}/{pod_name}: {exc.status.message}"
                ) from exc
            pod = None
        identity = identity_from_review(status, pod)
        if identity is None:
            log.info("telemetry token for pod %s/%s refused after review", namespace, pod_name)
        return identity


def draft_pod_identity(
    namespace: str, deployment: str, device_class: str, node: str, pod: str
) -> PodIdentity:
    """The identity a draft pod of ``device_class`` has once reviewed: what ``reporter_of`` accepts.

    The draft builders give their pods exactly these labels and controller; tests and tools use it
    to stand in for a review.
    """
    owner = Owner(namespace=namespace, name=deployment, uid="-")
    labels = selector_labels(owner, "draft", device_class)
    return PodIdentity(namespace, pod, node, labels, ("DaemonSet", draft_name(owner, device_class)))
