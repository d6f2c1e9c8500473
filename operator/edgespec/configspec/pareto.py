"""The Pareto front over goodput (more is better), tokens per USD (more) and joules per token (less).

No configuration on the front can be improved on one objective without losing on another; the
paper's point that no single configuration wins all three is the statement that this front has more
than one member. The algorithm peels the front one member at a time: the remaining point with the
highest goodput (ties broken by cost, then energy) cannot be dominated, so it joins the front and
every point it dominates is dropped in one vectorised step. Cost: O(n x front size) array work.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray


def pareto_mask(
    goodput: ArrayLike, tokens_per_usd: ArrayLike, joules_per_token: ArrayLike
) -> NDArray[np.bool_]:
    """True for each point not dominated by another (1-D inputs of equal length).

    A point dominates another when it is at least as good on all three objectives and strictly
    better on one. Points equal on all three are all kept.
    """
    g = np.asarray(goodput, dtype=np.float64).ravel()
    c = np.asarray(tokens_per_usd, dtype=np.float64).ravel()
    e = np.asarray(joules_per_token, dtype=np.float64).ravel()
    if not g.shape == c.shape == e.shape:
        raise ValueError("goodput, tokens_per_usd and joules_per_token must have the same length")
    on_front = np.zeros(g.shape, dtype=np.bool_)
    remaining = np.flatnonzero(np.isfinite(g) & np.isfinite(c) & ~np.isnan(e))
    while remaining.size:
        rg, rc, re_ = g[remaining], c[remaining], e[remaining]
        tied = np.flatnonzero(rg == rg.max())
        tied = tied[rc[tied] == rc[tied].max()]
        best = int(tied[np.argmin(re_[tied])])
        pg, pc, pe = rg[best], rc[best], re_[best]
        on_front[remaining[best]] = True
        dominated = (rg <= pg) & (rc <= pc) & (re_ >= pe) & ((rg < pg) | (rc < pc) | (re_ > pe))
        dominated[best] = True  # done with it
        remaining = remaining[~dominated]
    return on_front
