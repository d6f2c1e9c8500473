"""Developer tooling for edgespec: a real local Kubernetes control plane without Docker.

``tools`` builds and caches kube-apiserver, etcd, KWOK, Helm and friends from Go modules,
``nodes`` describes the emulated edge and GPU fleet, ``cluster`` starts and stops a local
cluster, and ``pytest_plugin`` offers it to tests as the session fixture ``cluster``.
"""
