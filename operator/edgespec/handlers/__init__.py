"""The thin shell: kopf watches, an informer-style cache, a work queue, and the reconcile loop.

Modules here may import kopf and the Kubernetes client; the pure core (``edgespec.api``,
``edgespec.configspec``, ``edgespec.builders``, ``edgespec.status``) never imports them. Every
watch event only updates the cache and enqueues the deployments it may affect; one level-based
reconcile per deployment reads the cache, computes the desired state with the pure core, applies
it, and writes status once.
"""
