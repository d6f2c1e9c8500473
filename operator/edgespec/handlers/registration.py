"""kopf registration: start-up settings and the watches; nothing else lives here.

Each watch event updates the cache and enqueues the deployments it may affect. The cache, the work
queue and the reconciler are no module globals: they live in an :class:`OperatorState` in kopf's
``memo`` (``handlers/state.py``), which every handler reads with ``state_of(memo)``. Every handler is
``async``: kopf runs plain functions in a thread pool, and the cache and the work queue (an
``asyncio.Queue`` with timers) belong to the event loop's thread. Handlers return nothing (kopf
would store returned values under ``status``, which is not a Kubernetes convention).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import kopf
from lightkube import ALL_NS, ApiError, AsyncClient
from lightkube.resources.core_v1 import ConfigMap, Node, Secret, Service, ServiceAccount
from lightkube.resources.policy_v1 import PodDisruptionBudget
from pydantic import ValidationError

from edgespec.api.base import GROUP, VERSION
from edgespec.api.profile import EdgeProfileSpec
from edgespec.handlers.cache import Cache
from edgespec.handlers.http import make_app, serve
from edgespec.handlers.identity import TokenReviewer
from edgespec.handlers.kube import EdgeProfileResource
from edgespec.handlers.reconcile import Reconciler
from edgespec.handlers.state import OperatorState, state_of
from edgespec.handlers.workqueue import backoff_delay
from edgespec.plan import JobOutcome, Rollout
from edgespec.status import NodeInfo, matches, now_utc
from edgespec.tls import CertificateFiles, keep_certificate_fresh, server_context

log = logging.getLogger("edgespec")


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    settings.posting.enabled = False  # we post our own Events, on the deployment, with clear reasons
    settings.watching.server_timeout = 300
    settings.networking.request_timeout = 60
    state = state_of(memo)
    config, queue = state.settings, state.queue
    client = AsyncClient(field_manager=config.field_manager)
    await _prefill(client, state)
    reconciler = Reconciler(client, state.cache, config, queue.add_later, state.metrics)
    state.reconciler = reconciler

    async def handle(key: tuple[str, str]) -> None:
        try:
            await reconciler.reconcile(key)
        except Exception:  # keep the worker alive; retry with exponential backoff and jitter
            delay = queue.retry(key)
            log.exception("reconcile of %s/%s failed; retrying in %.1f s", *key, delay)
        else:
            queue.forget(key)

    for _worker in range(config.workers):
        state.tasks.append(asyncio.create_task(queue.worker(handle)))
    namespaces = [n for n in config.namespaces.split(",") if n]
    state.tasks.append(asyncio.create_task(watch_plain_children(client, namespaces, state)))
    if config.metrics_port:
        app = make_app(state.cache, queue, TokenReviewer(client, state.metrics), state.metrics)
        tls = server_context(config.tls_cert_file, config.tls_key_file)
        state.runners.append(await serve(app, config.http_host, config.metrics_port, tls))
        if tls is not None and config.tls_cert_file and config.tls_key_file:  # a renewed certificate
            files = CertificateFiles(tls, config.tls_cert_file, config.tls_key_file)
            state.tasks.append(asyncio.create_task(keep_certificate_fresh(files)))


async def _prefill(client: AsyncClient, state: OperatorState) -> None:
    """List nodes and profiles once before any reconcile, so none sees a half-filled cache.

    Without it a deployment reconciled in the first moments would report zero nodes (and post a
    spurious warning) until the node watch caught up. After this single list, watches keep it current.
    """
    # Right after a CRD is installed its storage answers 429 "(re)initializing" for a moment; wait it
    # out here rather than failing start-up (kopf would retry the whole start-up a minute later).
    for attempt in range(60):
        try:
            await _list_into_cache(client, state)
            return
        except ApiError as exc:
            if exc.status.code not in (429, 500, 503) or attempt == 59:
                raise
            log.info("waiting for the API server (%s); retrying the initial list", exc.status.message)
            await asyncio.sleep(0.5)


async def _list_into_cache(client: AsyncClient, state: OperatorState) -> None:
    cache = state.cache
    state.metrics.api_requests.labels("list", "nodes").inc()
    state.metrics.api_requests.labels("list", "edgeprofiles").inc()
    async for node in client.list(Node):
        info = NodeInfo.from_body(node.to_dict())
        cache.nodes[info.name] = info
    cache.nodes_version += 1
    async for profile in client.list(EdgeProfileResource):
        name = profile.metadata.name if profile.metadata and profile.metadata.name else ""
        try:
            cache.profiles[name] = EdgeProfileSpec.model_validate(profile.get("spec") or {})
        except ValidationError as err:
            log.warning("ignoring EdgeProfile %s: %s", name, err.errors()[0]["msg"])
    log.info("cache filled: %d nodes, %d profiles", len(cache.nodes), len(cache.profiles))


@kopf.on.cleanup()
async def cleanup(memo: kopf.Memo, **_: Any) -> None:
    state = state_of(memo)
    for task in state.tasks:
        task.cancel()
    for runner in state.runners:
        await runner.cleanup()


PROFILE_BATCH_S = 2.0
"""Profiles come in batches (a profiling run, a ``kubectl apply`` of a set): reconcile once after one."""


def _enqueue_matching(state: OperatorState, labels: dict[str, str] | None, delay_s: float = 0.0) -> None:
    """Enqueue the deployments with a device class whose selector matches ``labels`` (all if None)."""
    for key, body in state.cache.deployments.items():
        classes = (body.get("spec") or {}).get("deviceClasses") or []
        if labels is None or any(matches(labels, c.get("nodeSelector") or {}) for c in classes):
            if delay_s > 0:
                state.queue.add_later(key, delay_s)  # one timer per key: the batch's first event sets it
            else:
                state.queue.add(key)


@kopf.on.event(GROUP, VERSION, "speculativedeployments")
async def deployment_event(
    type: str, body: kopf.Body, namespace: str | None, name: str, memo: kopf.Memo, **_: Any
) -> None:
    state = state_of(memo)
    key = (namespace or "", name)
    if type == "DELETED":
        state.cache.deployments.pop(key, None)
        if state.reconciler is not None:
            await state.reconciler.forget(dict(body))
        return
    state.cache.deployments[key] = dict(body)
    state.queue.add(key)


@kopf.on.event("", "v1", "nodes")
async def node_event(type: str, body: kopf.Body, name: str, memo: kopf.Memo, **_: Any) -> None:
    state = state_of(memo)
    cache = state.cache
    old = cache.nodes.get(name)
    if type == "DELETED":
        cache.nodes.pop(name, None)
        new = None
    else:
        new = NodeInfo.from_body(body)
        cache.nodes[name] = new
    if old == new:
        return  # heartbeats and status noise: nothing the deployments depend on changed
    cache.nodes_version += 1
    for info in (old, new):
        if info is not None:
            _enqueue_matching(state, dict(info.labels))


@kopf.on.event(GROUP, VERSION, "edgeprofiles")
async def profile_event(type: str, body: kopf.Body, name: str, memo: kopf.Memo, **_: Any) -> None:
    state = state_of(memo)
    if type == "DELETED":
        state.cache.profiles.pop(name, None)
    else:
        try:
            state.cache.profiles[name] = EdgeProfileSpec.model_validate(dict(body.get("spec") or {}))
        except ValidationError as err:
            log.warning("ignoring EdgeProfile %s: %s", name, err.errors()[0]["msg"])
            return
    # Without the delay, importing 42 profiles one object at a time re-selected (and posted a
    # Selected event) up to 42 times as the ranking changed with each arrival.
    _enqueue_matching(state, None, delay_s=PROFILE_BATCH_S)


def _rollout(kind: str, status: dict[str, Any]) -> Rollout:
    if kind == "DaemonSet":
        return Rollout(ready=status.get("numberReady", 0), desired=status.get("desiredNumberScheduled", 0))
    return Rollout(ready=status.get("readyReplicas", 0), desired=status.get("replicas", 0))


def _owner_refs(body: Mapping[str, Any], namespace: str | None) -> list[tuple[tuple[str, str], str]]:
    """Keys and uids of the SpeculativeDeployments owning ``body``."""
    return [
        ((namespace or "", ref["name"]), ref.get("uid", ""))
        for ref in body.get("metadata", {}).get("ownerReferences") or []
        if ref.get("kind") == "SpeculativeDeployment" and ref.get("apiVersion", "").startswith(GROUP + "/")
    ]


def _owners(body: Mapping[str, Any], namespace: str | None) -> list[tuple[str, str]]:
    """Keys of the SpeculativeDeployments owning ``body``."""
    return [key for key, _uid in _owner_refs(body, namespace)]


def _record_child(cache: Cache, type: str, body: Mapping[str, Any], namespace: str | None, name: str) -> None:
    """Keep ``cache.children`` current: what each deployment owns, for pruning without a LIST."""
    identity = (str(body.get("apiVersion", "")), str(body.get("kind", "")), namespace or "", name)
    for key, uid in _owner_refs(body, namespace):
        children = cache.children.setdefault(key, {})
        if type == "DELETED":
            children.pop(identity, None)
        else:
            children[identity] = uid


def _child_deleted(state: OperatorState, body: Mapping[str, Any], namespace: str | None, name: str) -> None:
    """Deleted under us (a user, a TTL): let the owner's next reconcile apply it again if wanted."""
    for owner in _owners(body, namespace):
        if state.reconciler is not None:
            state.reconciler.child_deleted(
                owner, str(body.get("apiVersion", "")), str(body.get("kind", "")), name
            )
        state.queue.add(owner)


def _workload_event(
    state: OperatorState, kind: str, type: str, body: kopf.Body, namespace: str | None, name: str
) -> None:
    _record_child(state.cache, type, body, namespace, name)
    key = (namespace or "", kind, name)
    if type == "DELETED":
        state.cache.workloads.pop(key, None)
        _child_deleted(state, body, namespace, name)
        return
    rollout = _rollout(kind, dict(body.get("status") or {}))
    if state.cache.workloads.get(key) == rollout:
        return
    state.cache.workloads[key] = rollout
    for owner in _owners(body, namespace):
        state.queue.add(owner)


_OURS: dict[str, Any] = {"app.kubernetes.io/managed-by": "edgespec"}


@kopf.on.event("apps", "v1", "deployments", labels=_OURS)
async def verifier_event(
    type: str, body: kopf.Body, namespace: str | None, name: str, memo: kopf.Memo, **_: Any
) -> None:
    _workload_event(state_of(memo), "Deployment", type, body, namespace, name)


@kopf.on.event("apps", "v1", "daemonsets", labels=_OURS)
async def drafts_event(
    type: str, body: kopf.Body, namespace: str | None, name: str, memo: kopf.Memo, **_: Any
) -> None:
    _workload_event(state_of(memo), "DaemonSet", type, body, namespace, name)


@kopf.on.event("batch", "v1", "jobs", labels={**_OURS, "app.kubernetes.io/component": "profiler"})
async def profiling_job_event(
    type: str, body: kopf.Body, namespace: str | None, name: str, memo: kopf.Memo, **_: Any
) -> None:
    state = state_of(memo)
    cache, reconciler = state.cache, state.reconciler
    _record_child(cache, type, body, namespace, name)
    key = (namespace or "", name)
    outcome = None if type == "DELETED" else _job_outcome(dict(body.get("status") or {}))
    if type == "DELETED":
        cache.finished_jobs.pop(key, None)
        if reconciler is not None:
            reconciler.job_gone(namespace or "", name)
        _child_deleted(state, body, namespace, name)
        _enqueue_followers(state, _owners(body, namespace))
        return
    if outcome is not None and not outcome.failed and reconciler is not None:
        try:  # a completed profiler's report: validated, then published as an EdgeProfile
            refused = await reconciler.harvest(dict(body))
            if refused:
                outcome = JobOutcome(failed=True, finished_at=outcome.finished_at, refused=refused)
        except Exception:  # the key's grace period then fails it visibly; never kill the watch
            log.exception("could not read the report of profiling Job %s/%s", namespace, name)
    if cache.finished_jobs.get(key) == outcome:
        return
    if outcome is None:
        cache.finished_jobs.pop(key, None)
    else:
        cache.finished_jobs[key] = outcome
    for owner in _owners(body, namespace):
        state.queue.add(owner)
    _enqueue_followers(state, _owners(body, namespace))


def _enqueue_followers(state: OperatorState, owners: list[tuple[str, str]]) -> None:
    """The deployments waiting on these deployments' profiling Jobs: an outcome is theirs too."""
    reconciler = state.reconciler
    for owner in owners:
        for follower in reconciler.claims.followers_of(owner) if reconciler is not None else []:
            state.queue.add(follower)


def _job_outcome(status: dict[str, Any]) -> JobOutcome | None:
    """Failed or Complete, with when; None while the Job runs."""
    for condition in status.get("conditions") or []:
        if condition.get("status") == "True" and condition.get("type") in ("Failed", "Complete"):
            when = condition.get("lastTransitionTime") or status.get("completionTime")
            finished = datetime.fromisoformat(when.replace("Z", "+00:00")) if when else now_utc()
            return JobOutcome(failed=condition["type"] == "Failed", finished_at=finished)
    return None


PLAIN_CHILDREN = {
    ConfigMap: "v1",
    Service: "v1",
    Secret: "v1",
    ServiceAccount: "v1",
    PodDisruptionBudget: "policy/v1",
}
"""Children with no status worth a kopf handler, watched only to restore them and to prune.

Watched with lightkube and a server-side label selector rather than kopf (whose label filter is
client-side): the operator never receives, let alone keeps, a Secret or ConfigMap it did not make.
"""


async def watch_plain_children(client: AsyncClient, namespaces: list[str], state: OperatorState) -> None:
    """One watch per kind (and namespace, in namespaced mode), re-opened when it ends or fails."""
    await asyncio.gather(
        *(_watch_kind(client, kind, ns, state) for kind in PLAIN_CHILDREN for ns in (namespaces or [ALL_NS]))
    )


async def _watch_kind(client: AsyncClient, resource: Any, namespace: str, state: OperatorState) -> None:
    failures = 0
    while True:
        try:
            async for op, obj in client.watch(resource, namespace=namespace, labels=dict(_OURS)):
                failures = 0
                body = {**obj.to_dict(), "apiVersion": PLAIN_CHILDREN[resource], "kind": resource.__name__}
                meta = body.get("metadata") or {}
                ns, name = meta.get("namespace"), meta.get("name", "")
                _record_child(state.cache, op, body, ns, name)
                if op == "DELETED":
                    _child_deleted(state, body, ns, name)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the API server away, a 410: start over after a backoff
            failures += 1
            delay = backoff_delay(failures)
            log.warning("watch of %s failed (%s); re-opening in %.1f s", resource.__name__, exc, delay)
            await asyncio.sleep(delay)
