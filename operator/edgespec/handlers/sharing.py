"""One profiling Job per profile key, however many deployments need it.

Profiles are cluster-scoped and shared: once a key's EdgeProfile exists, every deployment that needs
it uses it. Before, five deployments created at once, all missing the same key, ran five Jobs
measuring the same thing. Now the deployments needing a key elect one of them, whose Job profiles
it; the others wait for the profile (and take that Job's failure as theirs, so none waits forever).

Two deployments need "the same key" when the Job would measure the same thing: the same target,
device class (name and node selector), draft, quantisation and K range, and the built-in prompts
or the same prompts ConfigMap (a ConfigMap is namespaced, so custom prompts are never shared across
namespaces). The election is deterministic and sticky: a claim, once made, holds while its
deployment exists and still needs the key; otherwise a deployment that already has a Job for the key
wins, then the oldest (creation time, then namespace/name). Claims are made and read with no
``await`` in between, so concurrent reconciles in the one active operator never both win. After a
restart the claims are rebuilt from the Jobs that exist. No I/O here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from pydantic import ValidationError

from edgespec.api.deployment import SpeculativeDeploymentSpec
from edgespec.builders.naming import Owner, profiling_job_name
from edgespec.plan import ProfileKey, profile_keys

Key = tuple[str, str]
ShareKey = tuple[Any, ...]


def share_key(namespace: str, spec: SpeculativeDeploymentSpec, key: ProfileKey) -> ShareKey:
    """What a profiling Job of ``key`` measures; equal share keys mean one Job serves both."""
    device_class = next(c for c in spec.device_classes if c.name == key[0])
    prompts = spec.profiling.prompts_config_map
    return (
        spec.target.name,
        *key,
        spec.speculative_length.min,
        spec.speculative_length.max,
        tuple(sorted(device_class.node_selector.items())),
        (namespace, prompts) if prompts else None,
    )


def job_of(deployment: Key, key: ProfileKey) -> tuple[str, str]:
    """(namespace, name) of ``deployment``'s profiling Job for ``key`` (names need no uid)."""
    owner = Owner(namespace=deployment[0], name=deployment[1], uid="-")
    return deployment[0], profiling_job_name(owner, *key)


class ProfilingClaims:
    """Which deployment's Job profiles each shared key: the operator's memory of the election."""

    def __init__(self) -> None:
        self._claims: dict[ShareKey, Key] = {}
        self._follows: dict[Key, set[Key]] = {}  # follower -> the deployments whose Jobs it waits on
        self._specs: dict[Key, tuple[tuple[Any, Any], SpeculativeDeploymentSpec | None]] = {}

    def _spec(self, key: Key, body: Mapping[str, Any]) -> SpeculativeDeploymentSpec | None:
        meta = body.get("metadata") or {}
        version = (meta.get("uid"), meta.get("generation"))
        hit = self._specs.get(key)
        if hit is None or hit[0] != version:
            try:
                spec: SpeculativeDeploymentSpec | None = SpeculativeDeploymentSpec.model_validate(
                    body.get("spec") or {}
                )
            except ValidationError:
                spec = None
            hit = self._specs[key] = (version, spec)
        return hit[1]

    def profilers(
        self,
        key: Key,
        spec: SpeculativeDeploymentSpec,
        deployments: Mapping[Key, Mapping[str, Any]],
        has_job: Callable[[Key, ProfileKey], bool],
    ) -> dict[ProfileKey, Key]:
        """For each key ``spec`` needs profiled: the deployment whose Job profiles it (maybe ``key``)."""
        if not spec.profiling.enabled:
            self._follows.pop(key, None)
            return {}
        wanted = {share_key(key[0], spec, k): k for k in profile_keys(spec)}
        candidates: dict[ShareKey, list[tuple[bool, str, Key]]] = {}
        for other, body in deployments.items():
            meta = body.get("metadata") or {}
            if other != key and meta.get("deletionTimestamp"):
                continue
            other_spec = spec if other == key else self._spec(other, body)
            if other_spec is None or not other_spec.profiling.enabled:
                continue
            created = str(meta.get("creationTimestamp") or "")
            for k in profile_keys(other_spec):
                shared = share_key(other[0], other_spec, k)
                if shared in wanted:
                    candidates.setdefault(shared, []).append((not has_job(other, k), created, other))
        out: dict[ProfileKey, Key] = {}
        for shared, k in wanted.items():
            among = candidates.get(shared) or [(True, "", key)]
            claimed = self._claims.get(shared)
            if claimed is None or claimed not in {c[2] for c in among}:
                claimed = self._claims[shared] = min(among)[2]
            out[k] = claimed
        others = {d for d in out.values() if d != key}
        if others:
            self._follows[key] = others
        else:
            self._follows.pop(key, None)
        return out

    def followers_of(self, deployment: Key) -> list[Key]:
        """The deployments waiting on ``deployment``'s Jobs: to requeue when one ends or it goes."""
        return sorted(f for f, claimants in self._follows.items() if deployment in claimants)

    def forget(self, deployment: Key) -> list[Key]:
        """``deployment`` is gone: its claims lapse; returns its followers, who must elect again."""
        followers = self.followers_of(deployment)
        self._claims = {s: d for s, d in self._claims.items() if d != deployment}
        self._follows.pop(deployment, None)
        self._specs.pop(deployment, None)
        return followers
