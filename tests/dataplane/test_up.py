"""``edgespec-edge up``: one command brings the data plane up on loopback, serves, and stops cleanly."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import openai
import pytest

pytestmark = pytest.mark.models


def _listening(port: int) -> bool:
    table = Path("/proc/net/tcp").read_text().splitlines()[1:]
    return any(line.split()[1].endswith(f":{port:04X}") and line.split()[3] == "0A" for line in table)


def test_up_serves_the_openai_api_and_stops_on_sigterm(draft_file: Path, target_file: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGESPEC_EDGE_")}
    process = subprocess.Popen(
        [sys.executable, "-m", "edgespec_edge", "up", "--port", "0", "--k", "2",
         "--target", str(target_file), "--draft", str(draft_file)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )  # fmt: skip
    try:
        assert process.stdout is not None
        lines = []
        for line in process.stdout:  # bounded: the command prints the URL once both are ready
            lines.append(line)
            if "client.completions.create" in line:
                break
        output = "".join(lines)
        found = re.search(r"(http://127\.0\.0\.1:(\d+))/v1", output)
        assert found, output
        url, port = found.group(1), int(found.group(2))
        verifier = re.search(r"verifier http://127\.0\.0\.1:(\d+)", output)
        assert verifier, output
        assert 'OpenAI(base_url="' in output
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
        completion = client.completions.create(
            model="edgespec", prompt="The capital of France is", max_tokens=4, temperature=0
        )
        assert completion.usage is not None and completion.usage.completion_tokens == 4
        with urllib.request.urlopen(f"{url}/readyz", timeout=10) as ready:
            assert ready.status == 200
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0
        assert not _listening(port) and not _listening(int(verifier.group(1)))  # both are gone
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
