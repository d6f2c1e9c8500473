"""ConfigSpec, embedded: profiles in, the best (draft model, quantisation, K) per device class out.

Pure code (numpy, pydantic; no Kubernetes client). The model and findings follow Li et al.,
"ConfigSpec: Profiling-Based Configuration Selection for Distributed Edge-Cloud Speculative LLM
Serving" (EuroSys 2026 TDIS workshop, arXiv 2604.09722). The pipeline:

``loading`` (EdgeProfile YAML or objects) -> ``grid`` (arrays, alpha(K) with its source) ->
``metrics`` (goodput, tokens per USD, joules per token) -> ``selection`` (constraints, objective,
runners-up, margin, ``pareto`` front, ``explain`` reason).

The operator calls ``select`` (or ``rank`` for a per-class verdict without an exception).
"""

from edgespec.configspec.acceptance import ACCEPTANCE_SOURCES, fit_per_token_acceptance, geometric_alpha
from edgespec.configspec.candidates import (
    CONSTRAINT_NAMES,
    Candidate,
    Infeasible,
    InfeasibleError,
    NoSpeculation,
    Selection,
)
from edgespec.configspec.grid import (
    DEFAULT_K_VALUES,
    DEFAULT_PRICES_USD_PER_MILLION,
    MissingPriceError,
    ProfileGrid,
    build_grid,
    price_for,
)
from edgespec.configspec.loading import (
    ProfileLoadError,
    load_profiles,
    load_profiles_text,
    profile_from_object,
    profiles_from_objects,
)
from edgespec.configspec.metrics import (
    GridMetrics,
    compute_metrics,
    goodput_tokens_per_s,
    joules_per_token,
    tokens_per_usd,
)
from edgespec.configspec.pareto import pareto_mask
from edgespec.configspec.selection import (
    MixedTargetsError,
    Ranking,
    memory_need_bytes,
    rank,
    rank_grid,
    rank_per_target,
    select,
)

__all__ = [
    "ACCEPTANCE_SOURCES",
    "CONSTRAINT_NAMES",
    "DEFAULT_K_VALUES",
    "DEFAULT_PRICES_USD_PER_MILLION",
    "Candidate",
    "GridMetrics",
    "Infeasible",
    "InfeasibleError",
    "MissingPriceError",
    "MixedTargetsError",
    "NoSpeculation",
    "ProfileGrid",
    "ProfileLoadError",
    "Ranking",
    "Selection",
    "build_grid",
    "compute_metrics",
    "fit_per_token_acceptance",
    "geometric_alpha",
    "goodput_tokens_per_s",
    "joules_per_token",
    "load_profiles",
    "load_profiles_text",
    "memory_need_bytes",
    "pareto_mask",
    "price_for",
    "profile_from_object",
    "profiles_from_objects",
    "rank",
    "rank_grid",
    "rank_per_target",
    "select",
    "tokens_per_usd",
]
