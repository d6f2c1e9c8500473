"""Test-suite wiring: the local control plane fixture (``cluster``) comes from the dev harness."""

pytest_plugins = ["edgespec_dev.pytest_plugin"]
