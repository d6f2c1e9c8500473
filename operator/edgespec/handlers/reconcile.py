"""Reconcile one ``SpeculativeDeployment``: read the cache, plan with the pure core, apply once.

Level-based: whatever event woke it, it recomputes the whole status from the current state of the
world and writes it only when it differs from what is stored (so its own status write, which comes
back as a watch event, ends the loop instead of feeding it).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from lightkube import ApiError, AsyncClient
from lightkube.core.resource_registry import resource_registry
from lightkube.types import CascadeType
from pydantic import ValidationError

from edgespec.adaptation import LiveSample
from edgespec.api.deployment import SpeculativeDeploymentSpec, SpeculativeDeploymentStatus
from edgespec.api.profile import label_value
from edgespec.builders import ModelCache, Owner, Telemetry, WorkloadImages
from edgespec.builders.naming import (
    APP_NAME,
    LABEL_INSTANCE,
    LABEL_NAME,
    draft_name,
    profiling_job_name,
    verifier_name,
    verifier_secret_name,
    verifier_selector,
    verifier_url,
)
from edgespec.builders.podspec import CA_KEY, TOKEN_KEY
from edgespec.builders.profiling import CONTAINER as PROFILER_CONTAINER
from edgespec.handlers.cache import Cache, Identity, Key
from edgespec.handlers.faults import wrote
from edgespec.handlers.kube import (
    apply_manifest,
    apply_status,
    job_pods,
    pending_pods,
    post_event,
    read_secret_value,
)
from edgespec.handlers.metrics import OperatorMetrics
from edgespec.handlers.sharing import ProfilingClaims, job_of
from edgespec.handlers.workqueue import backoff_delay
from edgespec.plan import (
    ChildRejection,
    Event,
    Plan,
    ProfileKey,
    Rollout,
    desired_children,
    invalid_quantities,
    plan_status,
    profile_keys,
    with_apply_outcome,
)
from edgespec.provenance import Expected, ProfilerRun, ResultRejected, profile_manifest, validate_result
from edgespec.settings import OperatorSettings
from edgespec.status import NodeInfo, StuckPod, matches, now_utc, set_condition

log = logging.getLogger("edgespec.reconcile")


_FIRST_WAVE = frozenset({"Secret", "ConfigMap", "ServiceAccount"})


REJECTED_CODES = frozenset({400, 403, 422})
"""API answers that say the object itself is wrong (invalid, forbidden): retrying unchanged is futile."""


@dataclass
class _Rejected:
    """A child the API server refused, as last built: retried when it changes or its backoff is due."""

    digest: str
    rejection: ChildRejection
    failures: int
    retry_at: float


def _is_rejection(exc: ApiError, manifest: dict[str, Any]) -> bool:
    """The API server refused the object itself: retrying it unchanged is futile."""
    if exc.status.code in REJECTED_CODES:
        return True
    # An unparseable quantity makes server-side apply fail with a 500 ("failed to convert new object").
    return exc.status.code == 500 and bool(invalid_quantities(manifest))


def _rejection(manifest: dict[str, Any], exc: ApiError) -> ChildRejection:
    details = exc.status.details
    fields = [c.field for c in (details.causes or []) if c.field] if details is not None else []
    fields += invalid_quantities(manifest)
    return ChildRejection(
        kind=manifest["kind"],
        name=manifest["metadata"]["name"],
        field=", ".join(dict.fromkeys(fields)),
        message=exc.status.message or str(exc),
    )


def _pinned_node(job: dict[str, Any]) -> str:
    """The node a profiling Job's pod is pinned to (its required node affinity on metadata.name)."""
    affinity = job["spec"]["template"]["spec"].get("affinity") or {}
    terms = affinity.get("nodeAffinity", {}).get("requiredDuringSchedulingIgnoredDuringExecution", {})
    for term in terms.get("nodeSelectorTerms") or []:
        for field in term.get("matchFields") or []:
            if field.get("key") == "metadata.name" and field.get("values"):
                return str(field["values"][0])
    return ""


def _identity(manifest: dict[str, Any]) -> Identity:
    meta = manifest["metadata"]
    return (manifest["apiVersion"], manifest["kind"], meta.get("namespace", ""), meta["name"])


def _digest(manifest: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(manifest, sort_keys=True).encode()).hexdigest()


class Reconciler:
    """Holds the client, settings and cache; ``reconcile`` is called by the work-queue workers."""

    def __init__(
        self,
        client: AsyncClient,
        cache: Cache,
        settings: OperatorSettings,
        requeue: Callable[[Key, float], None],
        metrics: OperatorMetrics | None = None,
    ) -> None:
        self.client = client
        self.metrics = metrics if metrics is not None else OperatorMetrics()
        self.requeue = requeue  # reconcile a key again after a delay (the work queue's add_later)
        self.cache = cache
        self.settings = settings
        self.images = WorkloadImages(
            edge=settings.edge_image,
            verifier=settings.verifier_image,
            vllm=settings.vllm_image,
            pull_policy=settings.image_pull_policy,
        )
        self.model_cache = (
            ModelCache(host_path=settings.model_cache_host_path) if settings.model_cache_host_path else None
        )
        self.telemetry = (
            Telemetry(
                url=settings.telemetry_url,
                interval_seconds=settings.telemetry_interval_seconds,
                ca=settings.tls_ca_file.read_text() if settings.tls_ca_file is not None else None,
            )
            if settings.telemetry_url
            else None
        )
        # per deployment: its uid, and the digest of each child as last applied
        self._applied: dict[Key, tuple[str, dict[tuple[str, str, str, str], str]]] = {}
        self._written: dict[Key, tuple[str | None, dict[str, Any]]] = {}  # last status written, per object
        self._node_memo: dict[tuple[tuple[str, str], ...], tuple[int, list[NodeInfo]]] = {}
        self.tokens: dict[Key, str] = {}  # verifier token per deployment, once read or generated
        self._rejected: dict[Key, dict[Identity, _Rejected]] = {}  # children the API server refused
        self._posted: dict[Key, dict[str, str]] = {}  # per deployment: reason -> last message posted
        self._harvested: dict[tuple[str, str, str], str] = {}  # (namespace, Job, uid) read -> why refused
        self.claims = ProfilingClaims()  # whose profiling Job serves each shared key

    def _has_job(self, deployment: Key, profile_key: ProfileKey) -> bool:
        """Whether ``deployment``'s profiling Job for the key exists (applied by us, or seen)."""
        namespace, name = job_of(deployment, profile_key)
        identity = ("batch/v1", "Job", namespace, name)
        return (
            identity in self._applied.get(deployment, ("", {}))[1]
            or identity in self.cache.children.get(deployment, {})
            or (namespace, name) in self.cache.finished_jobs
        )

    async def reconcile(self, key: Key) -> None:
        """One reconcile, timed and counted."""
        with self.metrics.reconcile_seconds.time():
            try:
                await self._reconcile(key)
            except Exception:
                self.metrics.reconciles.labels("error").inc()
                raise
        self.metrics.reconciles.labels("ok").inc()

    def _nodes_for(self, spec: SpeculativeDeploymentSpec) -> list[NodeInfo]:
        """The cached nodes any class of ``spec`` selects, memoised per selector until a node changes.

        Most reconciles are woken by rollout progress; matching every cached node against every
        selector each time was a seventh of the operator's CPU at 1,000 nodes.
        """
        if len(self._node_memo) > 4096:
            self._node_memo.clear()
        found: dict[str, NodeInfo] = {}
        for c in spec.device_classes:
            selector = tuple(sorted(c.node_selector.items()))
            hit = self._node_memo.get(selector)
            if hit is None or hit[0] != self.cache.nodes_version:
                matching = [n for n in self.cache.nodes.values() if matches(n.labels, c.node_selector)]
                hit = self._node_memo[selector] = (self.cache.nodes_version, matching)
            found.update((n.name, n) for n in hit[1])
        return list(found.values())

    def _live_samples(self, key: Key, spec: SpeculativeDeploymentSpec) -> dict[str, list[LiveSample]]:
        """Telemetry pooled for each class that has reached ``minRounds``; those pools are emptied."""
        samples = {}
        for c in spec.device_classes:
            pool = self.cache.live.get((*key, c.name))
            if pool is not None and pool.rounds() >= spec.adaptation.min_rounds:
                samples[c.name] = pool.drain()
        return samples

    async def _reconcile(self, key: Key) -> None:
        body = self.cache.deployments.get(key)
        if body is None:
            self.metrics.record_predictions(*key, None)
            return  # deleted: owner references let the garbage collector remove the children
        namespace, name = key
        meta = body["metadata"]
        generation = meta.get("generation")
        stored = body.get("status") or {}
        # The cache may not have seen our last status write yet (its watch event trails the write):
        # the status we last wrote for this very object is the newer one. Nothing else writes it.
        mine = self._written.get(key)
        if mine is not None and mine[0] == meta.get("uid"):
            stored = mine[1]
        try:
            previous = SpeculativeDeploymentStatus.model_validate(stored) if stored else None
        except ValidationError:
            previous = None  # an older or foreign status shape: recompute from scratch
        try:
            spec = SpeculativeDeploymentSpec.model_validate(body.get("spec") or {})
        except ValidationError as err:
            await self._invalid(body, previous, generation, err)
            return
        owner = Owner.from_body(body)
        verifier = self.cache.workloads.get((namespace, "Deployment", verifier_name(owner)))
        drafts = {
            c.name: self.cache.workloads.get((namespace, "DaemonSet", draft_name(owner, c.name)), Rollout())
            for c in spec.device_classes
        }
        # One Job per profile key: the deployments needing it elect whose Job profiles it.
        profilers = self.claims.profilers(key, spec, self.cache.deployments, self._has_job)
        plan = plan_status(
            spec=spec,
            generation=generation,
            previous=previous,
            nodes=self._nodes_for(spec),
            profiles=list(self.cache.profiles.values()),
            now=now_utc(),
            verifier=verifier,
            drafts=drafts,
            finished_profiling={
                profile_key: outcome
                for profile_key, profiler in profilers.items()
                if (outcome := self.cache.finished_jobs.get(job_of(profiler, profile_key)))
            },
            profiled_elsewhere={k: "/".join(d) for k, d in profilers.items() if d != key},
            live_samples=self._live_samples(key, spec),
            stuck_pods=await self._stuck_pods(owner, [verifier, *drafts.values()]),
            verifier_endpoint=verifier_url(owner, spec.verifier.port, spec.verifier.tls is not None),
            verifier_selector=verifier_selector(owner),
        )
        rejections, retry_in_s = await self._apply_children(body, spec, plan)
        status, apply_events = with_apply_outcome(
            plan.status, previous, rejections, generation=generation, now=now_utc()
        )
        new = status.to_api()
        if new != stored:  # timestamps carry over when nothing changed, so equal means no write
            await apply_status(
                self.client, namespace, name, new, self.settings.field_manager, metrics=self.metrics
            )
            self._written[key] = (meta.get("uid"), new)
            log.info(
                "%s/%s: phase %s, nodes %s, K %s",
                namespace,
                name,
                new["phase"],
                new.get("nodesSummary"),
                new.get("kSummary"),
            )
        self.metrics.record_predictions(namespace, name, plan.status)
        timers = [t for t in (plan.requeue_after_s, retry_in_s) if t is not None]
        if timers:
            self.requeue(key, min(timers))
        for event in plan.events + apply_events:
            if event.reason in ("Selected", "Adapted"):
                self.metrics.selection_changes.labels(event.reason).inc()
            await self._event(body, event)

    async def _stuck_pods(self, owner: Owner, rollouts: list[Rollout | None]) -> list[StuckPod]:
        """Pods of the deployment that cannot start because an init container failed.

        Asked of the API server only while a workload is short of ready pods (one list of the
        deployment's Pending pods), so a settled deployment costs nothing.
        """
        if all(r is None or r.complete or r.desired == 0 for r in rollouts):
            return []
        labels = {LABEL_NAME: APP_NAME, LABEL_INSTANCE: label_value(owner.name)}
        try:
            pods = await pending_pods(self.client, owner.namespace, labels, metrics=self.metrics)
        except ApiError as exc:  # best effort: the status then says less, but still says NotReady
            log.warning("%s/%s: cannot list pods: %s", owner.namespace, owner.name, exc)
            return []
        found = (StuckPod.from_body(pod) for pod in pods)
        return sorted((p for p in found if p is not None), key=lambda p: (p.component, p.device_class, p.pod))

    async def _apply_children(
        self, body: dict[str, Any], spec: SpeculativeDeploymentSpec, plan: Plan
    ) -> tuple[list[ChildRejection], float | None]:
        """Apply what changed since the last apply, prune what is no longer wanted.

        Returns the children the API server rejected (400, 403, 422: the object is wrong, so it is
        not retried until it changes or its per-child backoff is due) and when to look again.
        Any other error (a conflict, the API server away) raises, and the key is retried with backoff.
        """
        owner = Owner.from_body(body)
        key = (owner.namespace, owner.name)
        # The token is generated once and then always read back, so it survives restarts of the operator.
        token = self.tokens.get(key) or await read_secret_value(
            self.client, owner.namespace, verifier_secret_name(owner), TOKEN_KEY, metrics=self.metrics
        )
        token = self.tokens[key] = token or secrets.token_urlsafe(32)
        verifier_ca = await self._verifier_ca(key, spec)
        children = desired_children(
            spec=spec,
            owner=owner,
            images=self.images,
            token=token,
            status=plan.status,
            profiling_jobs=plan.profiling_jobs,
            telemetry=self.telemetry,
            model_cache=self.model_cache,
            verifier_ca=verifier_ca,
            resources=self.settings.workload_resources,
        )
        uid, applied = self._applied.get(key, (owner.uid, {}))
        if uid != owner.uid:  # a new object under an old name: nothing of the old one counts
            applied = {}
            self._rejected.pop(key, None)
        rejected = self._rejected.setdefault(key, {})
        digests = {_identity(m): _digest(m) for m in children}
        for identity in [i for i, r in rejected.items() if digests.get(i) != r.digest]:
            del rejected[identity]  # changed (or no longer wanted): try the new one at once
        now = time.monotonic()
        changed = [
            m
            for m in children
            if applied.get(_identity(m)) != digests[_identity(m)]
            and not (_identity(m) in rejected and rejected[_identity(m)].retry_at > now)
        ]
        # Two waves, each concurrent: what pods mount or run as (Secret, ConfigMap, ServiceAccount,
        # RBAC) before what creates pods, so a new pod never starts without its K file or token.
        first = [m for m in changed if m["kind"] in _FIRST_WAVE]
        second = [m for m in changed if m["kind"] not in _FIRST_WAVE]
        try:
            for wave in (first, second):
                results = await asyncio.gather(
                    *(
                        apply_manifest(self.client, m, self.settings.field_manager, metrics=self.metrics)
                        for m in wave
                    ),
                    return_exceptions=True,
                )
                errors = []
                for manifest, result in zip(wave, results, strict=True):
                    identity = _identity(manifest)
                    if not isinstance(result, BaseException):
                        applied[identity] = digests[identity]
                        rejected.pop(identity, None)
                    elif isinstance(result, ApiError) and _is_rejection(result, manifest):
                        failures = rejected[identity].failures + 1 if identity in rejected else 1
                        rejected[identity] = _Rejected(
                            digest=digests[identity],
                            rejection=_rejection(manifest, result),
                            failures=failures,
                            retry_at=now + backoff_delay(failures),
                        )
                    else:
                        errors.append(result)
                if errors:
                    raise errors[0]
        finally:
            self._applied[key] = (owner.uid, applied)
        if changed:
            log.info(
                "%s/%s: applied %d of %d children (%d rejected)",
                owner.namespace,
                owner.name,
                len(changed),
                len(children),
                len(rejected),
            )
        await self._prune(owner, spec, set(digests))
        retry_in_s = min((r.retry_at - now for r in rejected.values()), default=None)
        return [r.rejection for r in rejected.values()], (
            max(retry_in_s, 0.0) + 0.1 if retry_in_s is not None else None
        )

    async def _verifier_ca(self, key: Key, spec: SpeculativeDeploymentSpec) -> str | None:
        """``ca.crt`` of spec.verifier.tls's Secret, read on every reconcile (so a new CA is copied on).

        Missing (cert-manager has not issued the certificate yet, say): the edge pods wait for the CA
        ConfigMap, and the deployment is looked at again in 15 s.
        """
        if spec.verifier.tls is None:
            return None
        name = spec.verifier.tls.secret_name
        ca = await read_secret_value(self.client, key[0], name, CA_KEY, metrics=self.metrics)
        if ca is None:
            log.warning(
                "%s/%s: spec.verifier.tls: Secret %s has no %s yet; edge pods wait for it",
                *key,
                name,
                CA_KEY,
            )
            self.requeue(key, 15.0)
        return ca

    async def _prune(self, owner: Owner, spec: SpeculativeDeploymentSpec, desired: set[Identity]) -> None:
        """Delete the children of this owner (by uid, as the watches saw them) no longer desired.

        A removed class's DaemonSet and ConfigMap, a class that turned infeasible or lost its nodes,
        profiling Jobs of keys no longer in the spec. Kept although not in this pass's desired set:
        profiling Jobs of the spec's keys (a finished Job tells its key's outcome until its TTL). A
        profiler ServiceAccount left by an older version is pruned like anything else not desired.
        """
        key = (owner.namespace, owner.name)
        keep = {
            ("batch/v1", "Job", owner.namespace, profiling_job_name(owner, *k)) for k in profile_keys(spec)
        }
        seen = self.cache.children.get(key, {})
        stale = [i for i, uid in seen.items() if uid == owner.uid and i not in desired and i not in keep]
        for identity in stale:
            api_version, kind, namespace, name = identity
            self.metrics.api_requests.labels("delete", kind.lower() + "s").inc()
            try:
                await self.client.delete(  # type: ignore[type-var]
                    resource_registry.load(api_version, kind),
                    name,
                    namespace=namespace,
                    cascade=CascadeType.BACKGROUND,
                )
            except ApiError as exc:
                if exc.status.code != 404:
                    raise
            wrote()
            seen.pop(identity, None)
            self._applied.get(key, ("", {}))[1].pop(identity, None)
            log.info("%s/%s: pruned %s %s", owner.namespace, owner.name, kind, name)

    def child_deleted(self, key: Key, api_version: str, kind: str, name: str) -> None:
        """A child was deleted (by a user, or its TTL): the next reconcile applies it again if wanted."""
        entry = self._applied.get(key)
        if entry is not None:
            entry[1].pop((api_version, kind, key[0], name), None)

    async def forget(self, body: dict[str, Any]) -> None:
        """After a deletion: drop what the operator remembers of it (its children are all namespaced
        and owned, so the garbage collector removes them; nothing cluster-scoped is left behind)."""
        owner = Owner.from_body(body)
        key = (owner.namespace, owner.name)
        self._applied.pop(key, None)
        self._written.pop(key, None)
        self.tokens.pop(key, None)
        self._rejected.pop(key, None)
        self._posted.pop(key, None)
        self.cache.children.pop(key, None)
        for pool_key in [k for k in self.cache.live if k[:2] == key]:
            del self.cache.live[pool_key]
        for follower in self.claims.forget(key):  # its Jobs are gone: they elect again
            self.requeue(follower, 0.0)

    async def harvest(self, job: dict[str, Any]) -> str:
        """A profiling Job completed: validate its pod's report and publish the EdgeProfile.

        The profiler has no API rights; its report is its termination message. Accepted only from a
        pod of this very Job (controller uid), on the node the Job was pinned to, a node of the
        class, for the Job's key and the deployment's target, finite and in range
        (``edgespec.provenance``). A rejected report fails the key, with a Warning: returns why
        then, "" otherwise (published, already read, or no longer wanted).
        """
        meta = job["metadata"]
        namespace, job_name, job_uid = meta["namespace"], meta["name"], meta.get("uid", "")
        marker = (namespace, job_name, job_uid)
        if marker in self._harvested:
            return self._harvested[marker]
        refs = meta.get("ownerReferences") or []
        owners = [r["name"] for r in refs if r.get("kind") == "SpeculativeDeployment"]
        body = self.cache.deployments.get((namespace, owners[0])) if owners else None
        if body is None:
            return ""
        try:
            spec = SpeculativeDeploymentSpec.model_validate(body.get("spec") or {})
        except ValidationError:
            return ""
        owner = Owner.from_body(body)
        profile_key = next((k for k in profile_keys(spec) if profiling_job_name(owner, *k) == job_name), None)
        if profile_key is None:
            return ""  # no longer wanted: pruning removes the Job
        device_class = next(c for c in spec.device_classes if c.name == profile_key[0])
        pinned = _pinned_node(job)
        node = self.cache.nodes.get(pinned)
        expected = Expected(
            device_class=profile_key[0],
            draft_model=profile_key[1],
            quantization=profile_key[2],
            target_model=spec.target.name,
            node=pinned,
            node_labels=dict(node.labels) if node is not None else {},
            selector=dict(device_class.node_selector),
            k_min=spec.speculative_length.min,
            k_max=spec.speculative_length.max,
        )
        try:
            run = await self._report_of(namespace, job_name, job_uid)
            profile = validate_result(run, expected)
        except ResultRejected as exc:
            log.warning("%s/%s: profiling Job %s: report rejected: %s", namespace, owner.name, job_name, exc)
            self._harvested[marker] = str(exc)
            await self._event(body, Event("Warning", "ProfileRejected", f"profiling Job {job_name}: {exc}"))
            return str(exc)
        await apply_manifest(
            self.client, profile_manifest(profile, run), self.settings.field_manager, metrics=self.metrics
        )
        self._harvested[marker] = ""
        log.info("%s/%s: published the profile %s measured by Job %s on %s", namespace, owner.name,
                 "/".join(profile_key), job_name, run.node)  # fmt: skip
        return ""

    async def _report_of(self, namespace: str, job_name: str, job_uid: str) -> ProfilerRun:
        """The succeeded pod of the Job and its profiler container's termination message."""
        for pod in await job_pods(self.client, namespace, job_name, metrics=self.metrics):
            meta, status = pod.get("metadata") or {}, pod.get("status") or {}
            if not any(r.get("uid") == job_uid for r in meta.get("ownerReferences") or []):
                continue
            if status.get("phase") != "Succeeded":
                continue
            for container in status.get("containerStatuses") or []:
                terminated = (container.get("state") or {}).get("terminated") or {}
                if container.get("name") == PROFILER_CONTAINER and terminated.get("exitCode") == 0:
                    return ProfilerRun(
                        namespace=namespace,
                        job=job_name,
                        pod=meta.get("name", ""),
                        node=(pod.get("spec") or {}).get("nodeName", ""),
                        message=terminated.get("message") or "",
                    )
        raise ResultRejected(f"no succeeded pod of Job {job_name} with a profiler report")

    def job_gone(self, namespace: str, job_name: str) -> None:
        """The Job was deleted (TTL, prune, a user): its harvest record goes with it."""
        self._harvested = {h: ok for h, ok in self._harvested.items() if h[:2] != (namespace, job_name)}

    async def _invalid(
        self,
        body: dict[str, Any],
        previous: SpeculativeDeploymentStatus | None,
        generation: int | None,
        err: ValidationError,
    ) -> None:
        """A spec the CRD let through but the operator cannot use: say which field, keep everything."""
        first = err.errors()[0]
        field = "spec." + ".".join(str(p) for p in first["loc"])
        message = f"{field}: {first['msg']}"
        status = (previous or SpeculativeDeploymentStatus()).model_copy()
        status.phase = "Degraded"
        status.observed_generation = generation
        status.conditions = [c for c in status.conditions if c.type != "SpecValid"] + [
            set_condition(
                status.conditions,
                type="SpecValid",
                status="False",
                reason="InvalidSpec",
                message=message,
                generation=generation,
                now=now_utc(),
            )
        ]
        meta = body["metadata"]
        written = status.to_api()
        await apply_status(
            self.client,
            meta["namespace"],
            meta["name"],
            written,
            self.settings.field_manager,
            metrics=self.metrics,
        )
        self._written[(meta["namespace"], meta["name"])] = (meta.get("uid"), written)
        await self._event(body, Event("Warning", "InvalidSpec", message))

    async def _event(self, body: dict[str, Any], event: Event) -> None:
        """Post ``event`` unless the last one of its reason for this deployment said the same."""
        meta = body["metadata"]
        posted = self._posted.setdefault((meta["namespace"], meta["name"]), {})
        if posted.get(event.reason) == event.message:
            return
        posted[event.reason] = event.message
        try:
            await post_event(self.client, body, event, self.settings.field_manager, metrics=self.metrics)
        except ApiError as exc:  # events are best effort; never fail a reconcile over one
            log.warning("could not post event %s: %s", event.reason, exc)
