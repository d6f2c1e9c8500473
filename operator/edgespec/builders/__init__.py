"""Pure manifest builders: typed inputs in, Kubernetes manifests (plain dicts) out.

The handlers call these and apply the result with server-side apply. Nothing here talks to the
cluster, reads the environment or imports kopf (an import-linter contract keeps it so): every input
is an argument, so each builder is tested without a cluster and a retry builds the same objects.
"""

from edgespec.builders.disruption import build_verifier_disruption_budget
from edgespec.builders.drafts import (
    build_draft_config_map,
    build_draft_daemon_set,
    build_draft_servers,
    build_draft_service,
)
from edgespec.builders.inputs import (
    DeploymentInput,
    DraftServerInput,
    ModelCache,
    ProfilingJobInput,
    Telemetry,
    VerifierInput,
    WorkloadImages,
    WorkloadResources,
)
from edgespec.builders.naming import Owner, common_labels, owner_reference, verifier_url
from edgespec.builders.profiling import (
    build_profiling_job,
)
from edgespec.builders.verifier import (
    build_verifier,
    build_verifier_ca_config_map,
    build_verifier_deployment,
    build_verifier_secret,
    build_verifier_service,
)

__all__ = [
    "DeploymentInput",
    "DraftServerInput",
    "ModelCache",
    "Owner",
    "ProfilingJobInput",
    "Telemetry",
    "VerifierInput",
    "WorkloadImages",
    "WorkloadResources",
    "build_draft_config_map",
    "build_draft_daemon_set",
    "build_draft_servers",
    "build_draft_service",
    "build_profiling_job",
    "build_verifier",
    "build_verifier_ca_config_map",
    "build_verifier_deployment",
    "build_verifier_disruption_budget",
    "build_verifier_secret",
    "build_verifier_service",
    "common_labels",
    "owner_reference",
    "verifier_url",
]
