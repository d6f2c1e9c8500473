"""The reconcile's brain, pure: from what was observed to the status to write and the events to post.

``plan_status`` resolves each device class's nodes, finds the profiles of the deployment's target,
runs the ConfigSpec selection per class when profiles are there, and returns the whole new status
with every condition set (Unknown where not yet known). The shell observes and applies.
"""

from __future__ import annotations

import hashlib
import re
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from pydantic import SecretStr

from edgespec.adaptation import LiveSample, decide, fold, selection_basis
from edgespec.api.deployment import (
    Condition,
    DeviceClassSelection,
    DeviceClassStatus,
    LiveTelemetry,
    Phase,
    ProfilingStatus,
    SpeculativeDeploymentSpec,
    SpeculativeDeploymentStatus,
    VerifierStatus,
)
from edgespec.api.profile import EdgeProfileSpec
from edgespec.builders import (
    DeploymentInput,
    DraftServerInput,
    ModelCache,
    Owner,
    ProfilingJobInput,
    Telemetry,
    VerifierInput,
    WorkloadImages,
    WorkloadResources,
    build_draft_servers,
    build_draft_service,
    build_profiling_job,
    build_verifier,
    build_verifier_disruption_budget,
)
from edgespec.builders.podspec import FETCH_CONTAINER
from edgespec.configspec import Ranking, rank
from edgespec.status import (
    NodeInfo,
    ResolvedClass,
    StuckPod,
    nodes_condition_args,
    resolve_classes,
    set_condition,
    stuck_message,
    summary,
)


@dataclass(frozen=True)
class Event:
    """An Event to post on the deployment."""

    type: str  # Normal or Warning
    reason: str
    message: str


@dataclass(frozen=True)
class Rollout:
    """Readiness of one workload (the verifier Deployment or a class's draft DaemonSet)."""

    ready: int = 0
    desired: int = 0

    @property
    def complete(self) -> bool:
        return self.desired > 0 and self.ready >= self.desired


ProfileKey = tuple[str, str, str]
"""(device class, draft model, quantisation)."""


@dataclass(frozen=True)
class JobOutcome:
    """How a finished profiling Job ended."""

    failed: bool  # False: it completed
    finished_at: datetime
    refused: str = ""
    """Why the operator refused the completed Job's report (then ``failed`` is True)."""


PROFILE_GRACE_S = 30.0
"""How long a completed profiling Job's profile may take to be seen before the key counts as failed."""


@dataclass(frozen=True)
class ProfilingJob:
    """One profiling Job to run: what to profile and on which node of the class."""

    key: ProfileKey
    node_name: str


@dataclass(frozen=True)
class Plan:
    status: SpeculativeDeploymentStatus
    events: list[Event] = field(default_factory=list)
    profiling_jobs: list[ProfilingJob] = field(default_factory=list)
    requeue_after_s: float | None = None
    """Plan again after this long even if nothing changes: a profile turns stale, a held K is due."""


ROLLOUT_RECHECK_S = 30.0
"""While the verifier or draft servers are short of ready pods, plan again this often (their pods'
init failures change no workload status, so no watch event would bring them)."""

STUCK_REASONS = ("ModelFetchFailed", "PodInitFailed")
"""Ready=False reasons of pods that cannot start: a model fetch failed, or another init container."""


def _stuck_reason(stuck: Sequence[StuckPod]) -> str:
    return STUCK_REASONS[0] if any(p.container == FETCH_CONTAINER for p in stuck) else STUCK_REASONS[1]


def profile_keys(spec: SpeculativeDeploymentSpec) -> list[ProfileKey]:
    """Every (class, draft, quantisation) the deployment needs a profile of, in spec order."""
    return [
        (c.name, d.name, q.quantization)
        for c in spec.device_classes
        for d in spec.drafts
        for q in d.quantizations
    ]


def duration_seconds(text: str) -> float:
    """A Go-style duration such as ``168h`` or ``1h30m`` in seconds (the API's pattern admits only h/m/s)."""
    total, number = 0.0, ""
    for char in text:
        if char.isdigit() or char == ".":
            number += char
        else:
            total += float(number) * {"h": 3600, "m": 60, "s": 1}[char]
            number = ""
    return total


def schedule_profiling(
    spec: SpeculativeDeploymentSpec,
    resolved: Sequence[ResolvedClass],
    to_profile: Sequence[ProfileKey],
    failed: frozenset[ProfileKey],
    elsewhere: frozenset[ProfileKey] = frozenset(),
) -> list[ProfilingJob]:
    """The Jobs that should exist now: per class at most ``concurrencyPerClass``, spread over its nodes.

    Keys whose Job finished are not scheduled again here (the Job's own backoffLimit did the retries;
    a Job that completed is not re-run): when the Job is deleted (its TTL, or a user) the key starts over.
    Keys another deployment's Job profiles (``elsewhere``) get no Job of this one.
    """
    nodes = {r.name: [n.name for n in r.ready_nodes] for r in resolved}
    per_class: dict[str, int] = {}
    jobs = []
    for key in to_profile:
        cls = key[0]
        if key in failed or key in elsewhere or not nodes.get(cls):
            continue
        index = per_class.get(cls, 0)
        if index >= spec.profiling.concurrency_per_class:
            continue
        per_class[cls] = index + 1
        jobs.append(ProfilingJob(key=key, node_name=nodes[cls][index % len(nodes[cls])]))
    return jobs


def profiles_for(
    spec: SpeculativeDeploymentSpec, profiles: Sequence[EdgeProfileSpec]
) -> list[EdgeProfileSpec]:
    """The profiles usable for this deployment: its target, its classes, its candidate drafts."""
    classes = {c.name for c in spec.device_classes}
    wanted = {(d.name, q.quantization) for d in spec.drafts for q in d.quantizations}
    return [
        p
        for p in profiles
        if p.target_model == spec.target.name
        and p.device_class in classes
        and (p.draft_model, p.quantization) in wanted
    ]


DraftRollout = Literal["Surge", "Drain"]


def draft_rollout(current_need: int, class_needs: Sequence[int], budget: int | None) -> DraftRollout:
    """Surge when a node's memory budget holds the chosen draft beside any draft of its class.

    ConfigSpec's estimate (measured memory, else model size + KV cache + overhead) of the chosen
    draft plus the largest of the class's drafts: whichever draft a node runs now, the two fit side by
    side while the new pod starts, and so does a re-roll of the same draft (a token rotation). An
    unknown need or budget proves nothing: Drain."""
    if budget is None or current_need <= 0 or not class_needs or min(class_needs) <= 0:
        return "Drain"
    return "Surge" if current_need + max(class_needs) <= budget else "Drain"


def _draft_rollout_of(ranking: Ranking, name: str, selection: DeviceClassSelection) -> DraftRollout:
    rows = [int(r) for r in ranking.grid.rows_of(name)]
    need = ranking.need
    budget = ranking.selections[name].memory_budget_bytes if name in ranking.selections else None
    if need is None or not rows:
        return "Drain"
    current = [
        int(need[r])
        for r in rows
        if (ranking.grid.draft_model[r], ranking.grid.quantization[r])
        == (selection.draft_model, selection.quantization)
    ]
    return draft_rollout(max(current, default=0), [int(need[r]) for r in rows], budget)


def plan_status(
    *,
    spec: SpeculativeDeploymentSpec,
    generation: int | None,
    previous: SpeculativeDeploymentStatus | None,
    nodes: Sequence[NodeInfo],
    profiles: Sequence[EdgeProfileSpec],
    now: datetime,
    verifier: Rollout | None = None,
    drafts: Mapping[str, Rollout] | None = None,
    finished_profiling: Mapping[ProfileKey, JobOutcome] | None = None,
    live_samples: Mapping[str, Sequence[LiveSample]] | None = None,
    stuck_pods: Sequence[StuckPod] = (),
    verifier_endpoint: str | None = None,
    verifier_selector: str | None = None,
    profiled_elsewhere: Mapping[ProfileKey, str] | None = None,
) -> Plan:
    """The complete status for one observation of the world, and the events worth posting.

    ``finished_profiling``: how the profiling Jobs that finished ended, per key. A key still to
    profile whose Job failed, or completed ``PROFILE_GRACE_S`` ago without a fresh profile appearing,
    counts as failed. ``live_samples``: per class, telemetry pooled since the last plan, folded into
    its live profile. ``stuck_pods``: pods of the verifier and draft servers whose init container
    failed (a model that cannot be fetched); the Ready condition quotes why and on which node.
    ``verifier_endpoint``: the verifier Service's URL, reported in the status; ``verifier_selector``:
    its pods' label selector, reported for the scale subresource.
    ``profiled_elsewhere``: keys another deployment's Job profiles (one Job per key however many
    deployments need it), with that deployment's ``namespace/name``; ``finished_profiling`` then
    holds the outcome of that Job for them.

    Composed of steps, each returning its condition, its events and when to look again
    (``_nodes_step``, ``_profiling_step``, ``_selection_step``, ``_readiness_step``); the phase is
    derived from the resulting status (``phase_of``). No I/O.
    """
    ctx = _Context(previous or SpeculativeDeploymentStatus(), generation, now)
    nodes_step, resolved = _nodes_step(ctx, spec, nodes)
    profiling_step, found = _profiling_step(ctx, spec, profiles, finished_profiling, profiled_elsewhere)
    selection_step, chosen = _selection_step(ctx, spec, found.usable, resolved, live_samples)
    verifier = verifier or Rollout()
    drafts = drafts or {}
    readiness_step = _readiness_step(ctx, chosen.selections, verifier, drafts, stuck_pods)
    steps = (nodes_step, profiling_step, selection_step, readiness_step)
    classes = [
        DeviceClassStatus(
            name=r.name,
            nodes=len(r.nodes),
            ready_nodes=len(r.ready_nodes),
            ready_drafts=drafts.get(r.name, Rollout()).ready,
            selection=chosen.selections.get(r.name),
            live=chosen.live.get(r.name),
            rollout=chosen.rollouts.get(r.name) if r.name in chosen.selections else None,
        )
        for r in resolved
    ]
    status = SpeculativeDeploymentStatus(
        observed_generation=generation,
        conditions=[c for step in steps for c in step.conditions],
        device_classes=classes,
        profiling=ProfilingStatus(
            done=len(found.have), needed=found.needed, failed=["/".join(k) for k in found.failed]
        ),
        verifier=VerifierStatus(
            ready_replicas=verifier.ready,
            replicas=verifier.desired,
            endpoint=verifier_endpoint or ctx.prev.verifier.endpoint,
            selector=verifier_selector or ctx.prev.verifier.selector,
        ),
        nodes_summary=summary((r.name, len(r.nodes)) for r in resolved),
        k_summary=summary(
            (n, "none" if s.mode == "cloudOnly" else s.k) for n, s in chosen.selections.items()
        ),
    )
    status.phase = phase_of(status)
    jobs = (
        []
        if not spec.profiling.enabled
        else schedule_profiling(
            spec,
            resolved,
            found.to_profile,
            frozenset((finished_profiling or {}).keys()),
            frozenset((profiled_elsewhere or {}).keys()),
        )
    )
    timers = [t for step in steps for t in step.timers]
    return Plan(
        status=status,
        events=[e for step in steps for e in step.events],
        profiling_jobs=jobs,
        requeue_after_s=max(min(timers), 0.0) + 1.0 if timers else None,
    )


@dataclass
class Step:
    """What one step of the plan decided: its conditions, the events worth posting, when to look again."""

    conditions: list[Condition] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    timers: list[float] = field(default_factory=list)


@dataclass(frozen=True)
class _Context:
    """What every step needs to set a condition: the previous status, the generation, the time."""

    prev: SpeculativeDeploymentStatus
    generation: int | None
    now: datetime

    def condition(self, type_: str, status: str, reason: str, message: str) -> Condition:
        return set_condition(
            self.prev.conditions,
            type=type_,
            status=status,  # type: ignore[arg-type]
            reason=reason,
            message=message,
            generation=self.generation,
            now=self.now,
        )


def _nodes_step(
    ctx: _Context, spec: SpeculativeDeploymentSpec, nodes: Sequence[NodeInfo]
) -> tuple[Step, list[ResolvedClass]]:
    """``NodesResolved``: each class's selector resolved to nodes; an event when a count changes."""
    resolved = resolve_classes(spec.device_classes, nodes)
    status, reason, message = nodes_condition_args(resolved)
    step = Step(conditions=[ctx.condition("NodesResolved", status, reason, message)])
    prev_counts = {c.name: c.nodes for c in ctx.prev.device_classes}
    if any(prev_counts.get(r.name) != len(r.nodes) for r in resolved):
        step.events.append(Event("Normal" if status == "True" else "Warning", reason, message))
    return step, list(resolved)


@dataclass(frozen=True)
class _Profiles:
    """What the profiling step found: the usable profiles and which keys still need a Job."""

    usable: list[EdgeProfileSpec]
    needed: int
    have: set[ProfileKey]
    to_profile: list[ProfileKey]
    failed: list[ProfileKey]


def _profiling_step(
    ctx: _Context,
    spec: SpeculativeDeploymentSpec,
    profiles: Sequence[EdgeProfileSpec],
    finished_profiling: Mapping[ProfileKey, JobOutcome] | None,
    profiled_elsewhere: Mapping[ProfileKey, str] | None,
) -> tuple[Step, _Profiles]:
    """``Profiled``: which profiles are present, fresh, missing, or failed to be measured."""
    now = ctx.now
    step = Step()
    usable = profiles_for(spec, profiles)
    needed = len(spec.device_classes) * sum(len(d.quantizations) for d in spec.drafts)
    have = {(p.device_class, p.draft_model, p.quantization) for p in usable}
    max_age_s = duration_seconds(spec.profiling.max_age)
    fresh = {
        (p.device_class, p.draft_model, p.quantization)
        for p in usable
        if p.measured_at is None or (now - p.measured_at).total_seconds() <= max_age_s
    }
    step.timers += [
        max_age_s - (now - p.measured_at).total_seconds()
        for p in usable
        if p.measured_at is not None and (now - p.measured_at).total_seconds() <= max_age_s
    ]
    missing = [key for key in profile_keys(spec) if key not in have]
    to_profile = [key for key in profile_keys(spec) if key not in fresh]
    crashed, silent, refused = [], [], []
    for key in to_profile:
        outcome = (finished_profiling or {}).get(key)
        if outcome is None:
            continue
        waited = (now - outcome.finished_at).total_seconds()
        if outcome.refused:
            refused.append((key, outcome.refused))
        elif outcome.failed:
            crashed.append(key)
        elif waited >= PROFILE_GRACE_S:
            silent.append(key)
        else:
            step.timers.append(PROFILE_GRACE_S - waited)
    failed = sorted(crashed + silent + [key for key, _ in refused])
    if failed:
        problems = [f"the report of {'/'.join(key)} was refused: {why}" for key, why in refused]
        if crashed:
            problems.append(
                f"profiling failed after its retries for {', '.join('/'.join(k) for k in crashed)}"
            )
        if silent:
            keys = ", ".join("/".join(k) for k in silent)
            problems.append(
                f"profiling Jobs completed but wrote no fresh EdgeProfile for {keys} "
                f"(is the profiler's target {spec.target.name}?)"
            )
        condition = ctx.condition(
            "Profiled",
            "False",
            "ProfilingFailed",
            "; ".join(problems)
            + "; see kubectl logs of the Jobs labelled app.kubernetes.io/component=profiler. "
            "A failed key is retried when its Job is deleted (by its TTL after an hour, or by you).",
        )
        if _changed(ctx.prev, condition):
            step.events.append(Event("Warning", "ProfilingFailed", condition.message))
    elif missing:
        condition = ctx.condition(
            "Profiled",
            "False",
            "ProfilesMissing",
            f"{len(have)} of {needed} profiles present for target {spec.target.name}; missing: "
            f"{', '.join('/'.join(k) for k in missing[:5])}{' ...' if len(missing) > 5 else ''}. "
            + (
                "Profiling Jobs are running."
                if spec.profiling.enabled
                else "Profiling is disabled: import EdgeProfiles with kubectl apply."
            )
            + _shared_note(missing, profiled_elsewhere or {}),
        )
    elif len(fresh) < len(have):
        condition = ctx.condition(
            "Profiled",
            "True",
            "RefreshingStaleProfiles",
            f"all {needed} present; re-profiling those older than {spec.profiling.max_age}",
        )
    else:
        condition = ctx.condition("Profiled", "True", "ProfilesPresent", f"all {needed} profiles present")
    step.conditions.append(condition)
    return step, _Profiles(usable, needed, have, to_profile, failed)


@dataclass(frozen=True)
class _Chosen:
    """What the selection step chose, per class."""

    selections: dict[str, DeviceClassSelection]
    live: dict[str, LiveTelemetry]
    rollouts: dict[str, DraftRollout]


def _selection_step(
    ctx: _Context,
    spec: SpeculativeDeploymentSpec,
    usable: list[EdgeProfileSpec],
    resolved: Sequence[ResolvedClass],
    live_samples: Mapping[str, Sequence[LiveSample]] | None,
) -> tuple[Step, _Chosen]:
    """``Selected``: ConfigSpec's choice per class, adapted by live telemetry; one event per change."""
    now, prev = ctx.now, ctx.prev
    step = Step()
    selections: dict[str, DeviceClassSelection] = {}
    live_by_class: dict[str, LiveTelemetry] = {}
    prev_sel = {c.name: c.selection for c in prev.device_classes}
    rollouts: dict[str, DraftRollout] = {c.name: c.rollout for c in prev.device_classes if c.rollout}
    if not usable:
        step.conditions.append(
            ctx.condition(
                "Selected", "Unknown", "AwaitingProfiles", "selection runs once profiles are present"
            )
        )
        return step, _Chosen(selections, live_by_class, rollouts)
    memory = {r.name: r.min_allocatable_memory_bytes for r in resolved if r.min_allocatable_memory_bytes}
    ranking, bases = _ranked(spec, usable, memory)
    prev_live = {c.name: c.live for c in prev.device_classes}
    chosen: list[str] = []
    for name, sel in ranking.selections.items():
        new, live, adapted, retry_after_s = _class_selection(
            spec=spec,
            name=name,
            basis=bases[name],
            offline=DeviceClassSelection(
                **sel.status_fields(fallback_requested=spec.cloud_only_fallback), selected_at=now
            ),
            old=prev_sel.get(name),
            previous_live=prev_live.get(name),
            samples=(live_samples or {}).get(name, ()),
            profiles=[p for p in usable if p.device_class == name],
            memory=memory,
            now=now,
        )
        if live is not None:
            live_by_class[name] = live
        if retry_after_s is not None:
            step.timers.append(retry_after_s)
        if adapted is not None:
            step.events.append(Event("Normal", "Adapted", f"{name}: {adapted}"))
        elif new.selected_at == now:
            chosen.append(f"{name}: {new.draft_model} {new.quantization} K={new.k}")
        selections[name] = new
        rollouts[name] = _draft_rollout_of(ranking, name, new)
    if chosen:  # one Event for all classes chosen in this pass; each reason is in the status
        step.events.append(
            Event(
                "Normal",
                "Selected",
                "; ".join(chosen)
                + " (why: kubectl get specdeploy -o yaml, deviceClasses[].selection.reason)",
            )
        )
    if ranking.infeasible:
        condition = ctx.condition(
            "Selected", "False", "Infeasible", "; ".join(b.message for b in ranking.infeasible.values())
        )
        if _changed(prev, condition):  # one Warning per verdict, not one per reconcile
            step.events.extend(Event("Warning", "Infeasible", b.message) for b in ranking.infeasible.values())
    else:
        condition = ctx.condition(
            "Selected", "True", "ConfigurationChosen", summary((n, f"K={s.k}") for n, s in selections.items())
        )
    step.conditions.append(condition)
    return step, _Chosen(selections, live_by_class, rollouts)


def _readiness_step(
    ctx: _Context,
    selections: Mapping[str, DeviceClassSelection],
    verifier: Rollout,
    drafts: Mapping[str, Rollout],
    stuck_pods: Sequence[StuckPod],
) -> Step:
    """``Ready``: the verifier and every selected class's draft servers, or why not (stuck pods named)."""
    waiting = [n for n in selections if not drafts.get(n, Rollout()).complete]
    stuck_verifier = [p for p in stuck_pods if p.component == "verifier"]
    stuck_drafts = [p for p in stuck_pods if p.component == "draft" and p.device_class in waiting]
    if not verifier.complete and stuck_verifier:
        ready = ctx.condition("Ready", "False", _stuck_reason(stuck_verifier), stuck_message(stuck_verifier))
    elif not verifier.complete:
        ready = ctx.condition(
            "Ready",
            "False",
            "VerifierNotReady",
            f"verifier: {verifier.ready}/{verifier.desired} replicas ready",
        )
    elif waiting and stuck_drafts:
        ready = ctx.condition("Ready", "False", _stuck_reason(stuck_drafts), stuck_message(stuck_drafts))
    elif not selections or waiting:
        ready = ctx.condition(
            "Ready",
            "False",
            "DraftsNotReady",
            f"draft servers not ready yet: {', '.join(waiting) or 'none selected'}",
        )
    else:
        ready = ctx.condition(
            "Ready", "True", "AllReady", f"verifier and draft servers of {len(selections)} class(es) ready"
        )
    step = Step(conditions=[ready])
    rolling = [
        r for r in (verifier, *(drafts.get(n, Rollout()) for n in selections)) if r.desired and not r.complete
    ]
    if rolling:
        # A pod stuck in init changes no workload status, so nothing would wake the reconcile to read
        # it: look again while a rollout is short of ready pods.
        step.timers.append(ROLLOUT_RECHECK_S)
    if ready.reason in STUCK_REASONS and ready.message != next(
        (c.message for c in ctx.prev.conditions if c.type == "Ready"), None
    ):
        step.events.append(Event("Warning", ready.reason, ready.message))
    return step


def phase_of(status: SpeculativeDeploymentStatus) -> Phase:
    """The phase, derived from the status the steps wrote (conditions first, then the counts).

    Degraded when the API server rejected a child (``ChildrenApplied=False``); Pending until every
    class's selector resolves (``NodesResolved``); Profiling while a profile is missing; Degraded when
    a class has no selection (infeasible); Ready when ``Ready`` is True; Deploying otherwise.
    """
    by_type = {c.type: c for c in status.conditions}
    applied, nodes, ready = by_type.get(APPLIED), by_type.get("NodesResolved"), by_type.get("Ready")
    if applied is not None and applied.status == "False":
        return "Degraded"
    if nodes is None or nodes.status != "True":
        return "Pending"
    if status.profiling.done < status.profiling.needed:
        return "Profiling"
    if any(c.selection is None for c in status.device_classes):
        return "Degraded"
    if ready is not None and ready.status == "True":
        return "Ready"
    return "Deploying"


def _shared_note(missing: Sequence[ProfileKey], elsewhere: Mapping[ProfileKey, str]) -> str:
    """Which missing keys the Jobs of other deployments profile (their profiles serve this one too)."""
    by_owner: dict[str, list[str]] = {}
    for key in missing:
        if key in elsewhere:
            by_owner.setdefault(elsewhere[key], []).append("/".join(key))
    return "".join(
        f" {', '.join(keys[:3])}{' ...' if len(keys) > 3 else ''}: profiled by the Job of {owner}."
        for owner, keys in sorted(by_owner.items())
    )


def _changed(previous: SpeculativeDeploymentStatus, condition: Condition) -> bool:
    """Whether ``condition`` says something new: its event is posted once per change, not per pass."""
    old = next((c for c in previous.conditions if c.type == condition.type), None)
    return old is None or (old.status, old.reason, old.message) != (
        condition.status,
        condition.reason,
        condition.message,
    )


@dataclass(frozen=True)
class ChildRejection:
    """A child the API server refused (400, 403 or 422): which object, which field, what it said."""

    kind: str
    name: str
    field: str
    message: str

    def describe(self) -> str:
        where = f" (field {self.field})" if self.field else ""
        return f"{self.kind} {self.name}{where}: {self.message}"


QUANTITY = re.compile(r"^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$")
"""The API server's pattern for a resource quantity (``500m``, ``2Gi``)."""


def invalid_quantities(manifest: Mapping[str, Any]) -> list[str]:
    """Paths of container resource quantities the API server cannot parse (``cpu: lots``).

    Server-side apply answers such an object with a 500 that names no field ("failed to convert
    new object ... quantities must match the regular expression"); this finds the field.
    """
    found = []
    spec = manifest.get("spec") or {}
    pod = (spec.get("template") or {}).get("spec") or spec
    for group in ("initContainers", "containers"):
        for index, container in enumerate(pod.get(group) or []):
            for kind in ("requests", "limits"):
                for name, value in ((container.get("resources") or {}).get(kind) or {}).items():
                    if not isinstance(value, int) and not QUANTITY.match(str(value)):
                        found.append(f"spec.template.spec.{group}[{index}].resources.{kind}.{name}")
    return found


APPLIED = "ChildrenApplied"
MAX_MESSAGE = 32768
"""metav1.Condition's message limit."""


def with_apply_outcome(
    status: SpeculativeDeploymentStatus,
    previous: SpeculativeDeploymentStatus | None,
    rejections: Sequence[ChildRejection],
    *,
    generation: int | None,
    now: datetime,
) -> tuple[SpeculativeDeploymentStatus, list[Event]]:
    """``status`` with the ``ChildrenApplied`` condition, and the one Warning a new rejection earns.

    A rejected child is the spec's fault (a nodeSelector key the API refuses, a quantity like
    ``lots``): the phase turns Degraded and the condition names each object, its field and the API
    server's message. The event is posted when the message changes, never once per retry.
    """
    prev = previous or SpeculativeDeploymentStatus()
    if rejections:
        text = "; ".join(r.describe() for r in rejections)
        condition = set_condition(
            prev.conditions,
            type=APPLIED,
            status="False",
            reason="ChildRejected",
            message=(
                f"the API server rejected {text}. Fix the spec field the child takes it from; until "
                "then it is retried with exponential backoff (at most every 5 minutes)."
            )[:MAX_MESSAGE],
            generation=generation,
            now=now,
        )
    else:
        condition = set_condition(
            prev.conditions,
            type=APPLIED,
            status="True",
            reason="Applied",
            message="every child was accepted by the API server",
            generation=generation,
            now=now,
        )
    events: list[Event] = []
    if rejections and _changed(prev, condition):
        events.append(Event("Warning", "ChildRejected", condition.message))
    new = status.model_copy(
        update={"conditions": [c for c in status.conditions if c.type != APPLIED] + [condition]}
    )
    new.phase = phase_of(new)
    return new, events


_RANKINGS: OrderedDict[tuple[Any, ...], tuple[list[EdgeProfileSpec], Ranking, dict[str, str]]] = OrderedDict()
_RANKINGS_KEPT = 512


def _ranked(
    spec: SpeculativeDeploymentSpec, usable: list[EdgeProfileSpec], memory: Mapping[str, int]
) -> tuple[Ranking, dict[str, str]]:
    """ConfigSpec's ranking of ``usable`` and each class's selection basis, memoised.

    Most reconciles are woken by rollout progress, with the same inputs as the last one: the key is
    the spec's parts the ranking reads and the identity of the profile objects (the cache replaces
    an object when its profile changes; the memo holds the objects, so an identity cannot be reused
    while its entry lives). Pure: a hit returns what the computation would.
    """
    key = (
        spec.objective.model_dump_json(),
        spec.constraints.model_dump_json(),
        spec.speculative_length.model_dump_json(),
        spec.target.name,
        spec.target.price_usd_per_million_tokens,
        tuple(sorted(memory.items())),
        tuple(id(p) for p in usable),
    )
    hit = _RANKINGS.get(key)
    if hit is not None and all(a is b for a, b in zip(hit[0], usable, strict=True)):
        _RANKINGS.move_to_end(key)
        return hit[1], hit[2]
    classes = sorted({p.device_class for p in usable})
    ranking = rank(
        usable,
        spec.objective,
        spec.constraints,
        prices_usd_per_million={spec.target.name: spec.target.price_usd_per_million_tokens},
        device_memory_bytes=memory,
        k_values=spec.speculative_length.values(),
        target_model=spec.target.name,
        device_classes=classes,
        assume_fits=True,  # nodes report memory, profiles may not: the status says when it was assumed
    )
    bases = {
        c: selection_basis(spec, [p for p in usable if p.device_class == c], memory.get(c)) for c in classes
    }
    _RANKINGS[key] = (list(usable), ranking, bases)
    if len(_RANKINGS) > _RANKINGS_KEPT:
        _RANKINGS.popitem(last=False)
    return ranking, bases


def _class_selection(
    *,
    spec: SpeculativeDeploymentSpec,
    name: str,
    basis: str,
    offline: DeviceClassSelection,
    old: DeviceClassSelection | None,
    previous_live: LiveTelemetry | None,
    samples: Sequence[LiveSample],
    profiles: Sequence[EdgeProfileSpec],
    memory: Mapping[str, int],
    now: datetime,
) -> tuple[DeviceClassSelection, LiveTelemetry | None, str | None, float | None]:
    """One class's selection: the offline choice, with K adapted to live telemetry when there is some.

    Returns the selection, the class's live telemetry, a message when adaptation changed K, and when
    to decide again if a change is held back only by the minimum interval.
    ``selected_at`` carries over while (draft, quantisation, K) stay the same.
    """
    offline.basis = basis
    same_draft = old is not None and (old.draft_model, old.quantization) == (
        offline.draft_model,
        offline.quantization,
    )
    continuing = old is not None and same_draft and old.basis == basis
    live = None
    if spec.adaptation.enabled:
        live = fold(
            previous_live,
            samples,
            draft_model=offline.draft_model,
            quantization=offline.quantization,
            weight=spec.adaptation.ewma_weight,
            now=now,
        )
    new, message = offline, None
    profile = next(
        (
            p
            for p in profiles
            if (p.draft_model, p.quantization) == (offline.draft_model, offline.quantization)
        ),
        None,
    )
    current_k = old.k if continuing and old is not None else offline.k
    decision = None
    if live is not None and profile is not None and offline.mode == "speculative":  # cloud-only: no K
        decision = decide(
            spec=spec,
            device_class=name,
            profile=profile,
            live=live,
            current_k=current_k,
            last_change=old.selected_at if continuing and old is not None else None,
            now=now,
            device_memory_bytes=memory,
        )
    if decision is not None:
        new = offline.model_copy(
            update={
                **decision.candidate.choice_fields(),
                "reason": decision.reason,
                "adapted": True,
            }
        )
        if decision.changed and continuing:
            message = decision.reason
    if old is not None and (old.draft_model, old.quantization, old.k) == (
        new.draft_model,
        new.quantization,
        new.k,
    ):
        new.selected_at = old.selected_at
    return new, live, message, decision.retry_after_s if decision is not None else None


def desired_children(
    *,
    spec: SpeculativeDeploymentSpec,
    owner: Owner,
    images: WorkloadImages,
    token: str,
    status: SpeculativeDeploymentStatus,
    profiling_jobs: Sequence[ProfilingJob] = (),
    telemetry: Telemetry | None = None,
    model_cache: ModelCache | None = None,
    verifier_ca: str | None = None,
    resources: WorkloadResources | None = None,
) -> list[dict[str, Any]]:
    """The verifier objects, and the draft servers of every class that has a selection, in apply order.

    The verifier comes first (profiling needs it); a class without a selection gets no draft servers
    yet. K reaches only the ConfigMap, so a change of K alone never restarts a draft server.
    ``verifier_ca`` is the TLS Secret's ``ca.crt`` (spec.verifier.tls), copied for the edge pods.
    """
    reports = telemetry if spec.adaptation.enabled else None
    common = {
        "owner": owner,
        "spec": spec,
        "images": images,
        "model_cache": model_cache,
        "verifier_ca": verifier_ca,
        "operator_ca": reports.ca if reports is not None else None,  # the drafts verify where they report
        "resources": resources or WorkloadResources(),
    }
    children = build_verifier(VerifierInput(**common, token=SecretStr(token)))
    children += build_verifier_disruption_budget(DeploymentInput(**common))
    for cls in status.device_classes:
        if cls.selection is None or cls.nodes == 0:  # no node to run on: no DaemonSet, no ConfigMap
            continue
        children += build_draft_servers(
            DraftServerInput(
                **common,
                device_class_name=cls.name,
                draft_model=cls.selection.draft_model,
                quantization=cls.selection.quantization,
                k=cls.selection.k,
                cloud_only=cls.selection.mode == "cloudOnly",
                telemetry=reports,
                surge=cls.rollout == "Surge",
            )
        )
    if any(c["kind"] == "DaemonSet" for c in children):
        children.append(build_draft_service(DeploymentInput(**common)))
    for job in profiling_jobs:
        cls_name, draft, quant = job.key
        children.append(
            build_profiling_job(
                ProfilingJobInput(
                    **common,
                    device_class_name=cls_name,
                    draft_model=draft,
                    quantization=quant,
                    node_name=job.node_name,
                )
            )
        )
    return [_with_token_digest(c, token) for c in children]


TOKEN_DIGEST_ANNOTATION = "edgespec.dev/token-sha256"


def _with_token_digest(manifest: dict[str, Any], token: str) -> dict[str, Any]:
    """Pods that hold the token roll when it changes, so the verifier and drafts never disagree.

    The token changes only when its Secret is lost while the operator is not running (it is kept in
    memory otherwise and re-applied as it was). Jobs are left alone: their template is immutable.
    """
    if manifest["kind"] not in ("Deployment", "DaemonSet"):
        return manifest
    template = manifest["spec"]["template"]
    annotations = {
        **template.get("metadata", {}).get("annotations", {}),
        TOKEN_DIGEST_ANNOTATION: hashlib.sha256(token.encode()).hexdigest()[:16],
    }
    metadata = {**template.get("metadata", {}), "annotations": annotations}
    return {**manifest, "spec": {**manifest["spec"], "template": {**template, "metadata": metadata}}}
