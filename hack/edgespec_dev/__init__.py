"""Developer tooling for edgespec: a real local Kubernetes control plane without Docker.

``tools`` builds and caches kube-apiserver, etcd, KWOK, Helm and friends from Go modules,
``nodes`` describes the emulated edge and GPU fleet, ``cluster`` starts and stops a local
cluster, ``images`` builds the project's images from its Dockerfiles (buildah on a Debian base,
no Docker, no registry), and ``pytest_plugin`` offers the cluster to tests as the fixture ``cluster``.
"""
