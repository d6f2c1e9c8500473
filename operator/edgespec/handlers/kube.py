"""Kubernetes access for the shell: the lightkube client, our custom resources, status and events.

Status is written with server-side apply on the status subresource (one field manager, forced),
so a crash and restart converge to the same object and fields we stop setting are removed.
"""

from __future__ import annotations

import base64
from typing import Any

from lightkube import ApiError, AsyncClient
from lightkube.core.resource_registry import resource_registry
from lightkube.generic_resource import create_global_resource, create_namespaced_resource
from lightkube.models.core_v1 import EventSource, ObjectReference
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import Event as CoreEvent
from lightkube.resources.core_v1 import Pod, Secret
from lightkube.types import PatchType

from edgespec.api.base import API_VERSION, GROUP, VERSION
from edgespec.handlers.faults import wrote
from edgespec.handlers.metrics import OperatorMetrics
from edgespec.plan import Event
from edgespec.status import now_utc

SpeculativeDeploymentResource = create_namespaced_resource(
    GROUP, VERSION, "SpeculativeDeployment", "speculativedeployments"
)
EdgeProfileResource = create_global_resource(GROUP, VERSION, "EdgeProfile", "edgeprofiles")


async def apply_status(
    client: AsyncClient,
    namespace: str,
    name: str,
    status: dict[str, Any],
    field_manager: str,
    *,
    metrics: OperatorMetrics,
) -> None:
    """Server-side apply the whole status of one deployment."""
    body = {"apiVersion": API_VERSION, "kind": "SpeculativeDeployment", "status": status}
    metrics.api_requests.labels("apply", "speculativedeployments/status").inc()
    await client.patch(
        SpeculativeDeploymentResource.Status,
        name,
        body,
        namespace=namespace,
        patch_type=PatchType.APPLY,
        field_manager=field_manager,
        force=True,
    )
    wrote()


async def post_event(
    client: AsyncClient, owner: dict[str, Any], event: Event, component: str, *, metrics: OperatorMetrics
) -> None:
    """A core/v1 Event on ``owner`` (what ``kubectl describe`` shows)."""
    meta = owner["metadata"]
    now = now_utc().isoformat().replace("+00:00", "Z")
    metrics.api_requests.labels("create", "events").inc()
    await client.create(
        CoreEvent(
            metadata=ObjectMeta(generateName=f"{meta['name']}.", namespace=meta["namespace"]),
            involvedObject=ObjectReference(
                apiVersion=API_VERSION,
                kind="SpeculativeDeployment",
                name=meta["name"],
                namespace=meta["namespace"],
                uid=meta.get("uid"),
                resourceVersion=meta.get("resourceVersion"),
            ),
            type=event.type,
            reason=event.reason,
            message=event.message[:1024],
            source=EventSource(component=component),
            firstTimestamp=now,  # type: ignore[arg-type]
            lastTimestamp=now,  # type: ignore[arg-type]
            count=1,
        )
    )
    wrote()


async def apply_manifest(
    client: AsyncClient, manifest: dict[str, Any], field_manager: str, *, metrics: OperatorMetrics
) -> None:
    """Server-side apply one child manifest (create or converge), taking ownership of its fields."""
    resource = resource_registry.load(manifest["apiVersion"], manifest["kind"])
    meta = manifest["metadata"]
    metrics.api_requests.labels("apply", manifest["kind"].lower() + "s").inc()
    await client.patch(  # type: ignore[type-var]
        resource,
        meta["name"],
        manifest,
        namespace=meta.get("namespace"),
        patch_type=PatchType.APPLY,
        field_manager=field_manager,
        force=True,
    )
    wrote()


async def read_secret_value(
    client: AsyncClient, namespace: str, name: str, key: str, *, metrics: OperatorMetrics
) -> str | None:
    """One value of a Secret, or None if the Secret or the key does not exist."""
    metrics.api_requests.labels("get", "secrets").inc()
    try:
        secret = await client.get(Secret, name, namespace=namespace)
    except ApiError as exc:
        if exc.status.code == 404:
            return None
        raise
    data = secret.data or {}
    return base64.b64decode(data[key]).decode() if key in data else None


async def pending_pods(
    client: AsyncClient, namespace: str, labels: dict[str, str], *, metrics: OperatorMetrics
) -> list[dict[str, Any]]:
    """The Pending pods matching ``labels`` (where a pod waits while an init container fails), as dicts."""
    metrics.api_requests.labels("list", "pods").inc()
    selector: dict[str, Any] = dict(labels)
    return [
        pod.to_dict()
        async for pod in client.list(
            Pod, namespace=namespace, labels=selector, fields={"status.phase": "Pending"}
        )
    ]


async def job_pods(
    client: AsyncClient, namespace: str, job_name: str, *, metrics: OperatorMetrics
) -> list[dict[str, Any]]:
    """The pods of one Job (by the label the Job controller sets), as dicts."""
    metrics.api_requests.labels("list", "pods").inc()
    selector: dict[str, Any] = {"batch.kubernetes.io/job-name": job_name}
    return [pod.to_dict() async for pod in client.list(Pod, namespace=namespace, labels=selector)]
