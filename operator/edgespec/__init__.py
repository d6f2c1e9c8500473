"""edgespec: a Kubernetes operator for edge-cloud speculative LLM serving.

The package is layered. ``edgespec.api`` (the resource types), ``edgespec.configspec`` (the
analytical selection model) and ``edgespec.builders`` (manifest builders) form the pure core: data in,
data out, no Kubernetes client. ``edgespec.handlers`` glues the core to the cluster with kopf. The
import contract in ``pyproject.toml`` keeps that direction and the test suite checks it.
"""

__version__ = "0.1.0"
