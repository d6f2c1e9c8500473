"""Fuzzing: 10,000 generated requests against each of the edge and verifier APIs (hypothesis).

Both servers are the real ones (real draft model, real target) on loopback, in a child process (so
its memory is theirs alone, not the fuzzer's). The generated requests are raw bytes, arbitrary JSON,
and near-valid bodies whose fields are each valid or junk. What must hold for every request: no 5xx
(input never causes a server error; the verifier is up, so even 502 would be a bug), and afterwards:
both servers alive, no request slot or verifier session leaked, and memory flat between the first
2,000 requests and the last.

Generation is kept short (``max_tokens`` of 1-2 or invalid, small contexts) so the run takes a few
minutes on 2 shared cores; most requests are refused by validation, the valid ones run real rounds.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from edgespec_edge.config import EdgeSettings
from edgespec_edge.llama_kv import LlamaRuntime
from edgespec_edge.loop import VerifierClient
from edgespec_edge.server import create_app as create_edge_app
from edgespec_verifier.auth import TokenSource
from edgespec_verifier.engines.llamacpp import LlamaCppEngine
from edgespec_verifier.server import VerifierSettings
from edgespec_verifier.server import create_app as create_verifier_app
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytestmark = pytest.mark.models

REQUESTS = 10_000
BATCH = 10  # requests per hypothesis example (fuzz())
EARLY = 2_000
MEMORY_GROWTH_LIMIT_MB = 64
TOKEN = "fuzz-token-0123456789"

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


def field(valid: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Mostly a valid value, sometimes junk of any JSON type."""
    return st.one_of(valid, valid, valid, JSON)


def body(
    fields: dict[str, st.SearchStrategy[Any]], required: frozenset[str] = frozenset()
) -> st.SearchStrategy[bytes]:
    """A request body: near-valid JSON (each field present or not, valid or junk; ``required`` ones
    always present), any JSON, or raw bytes."""
    near_valid = st.fixed_dictionaries(
        {name: field(s) for name, s in fields.items() if name in required},
        optional={name: field(s) for name, s in fields.items() if name not in required},
    )
    as_json = st.one_of(near_valid, near_valid, near_valid, JSON).map(lambda v: json.dumps(v).encode())
    return st.one_of(as_json, as_json, as_json, st.binary(max_size=64))


SMALL_MAX = st.one_of(st.integers(min_value=-3, max_value=2), st.integers(min_value=32769))
TEXT = st.text(max_size=40)
COMMON = {
    "model": st.sampled_from(["edgespec", "gpt-4o", ""]),
    "max_tokens": SMALL_MAX,
    "max_completion_tokens": SMALL_MAX,
    "temperature": st.floats(min_value=-1, max_value=3, allow_nan=False),
    "seed": st.integers(min_value=-5, max_value=2**64),
    "stream": st.booleans(),
    "stream_options": st.fixed_dictionaries({"include_usage": st.booleans()}),
    "stop": st.one_of(TEXT, st.lists(TEXT, max_size=5)),
    "n": st.integers(min_value=0, max_value=3),
    "top_p": st.floats(min_value=0, max_value=1),
    "logprobs": st.booleans(),
    "user": TEXT,
}
MESSAGE = st.fixed_dictionaries(
    {
        "role": st.sampled_from(["system", "developer", "user", "assistant", "tool", "model"]),
        "content": st.one_of(
            TEXT,
            st.none(),
            st.lists(st.fixed_dictionaries({"type": st.sampled_from(["text", "image_url"]), "text": TEXT})),
        ),
    }
)
EDGE_REQUESTS = st.one_of(
    st.tuples(
        st.just("POST"),
        st.just("/v1/completions"),
        body(
            {
                **COMMON,
                "prompt": st.one_of(
                    TEXT, st.lists(TEXT, max_size=2), st.lists(st.integers(-2, 300_000), max_size=6)
                ),
            }
        ),
    ),
    st.tuples(
        st.just("POST"),
        st.just("/v1/chat/completions"),
        body({**COMMON, "messages": st.lists(MESSAGE, max_size=3)}),
    ),
    st.tuples(
        st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH"]),
        st.sampled_from(["/v1/models", "/v1/models/edgespec", "/v1/models/x", "/health", "/readyz", "/v2"]),
        st.binary(max_size=16),
    ),
)
TOKENS = st.lists(st.integers(min_value=-1, max_value=270_000), min_size=0, max_size=6)
DISTRIBUTION = st.fixed_dictionaries(
    {"tokens": TOKENS, "probs": st.lists(st.floats(min_value=-0.5, max_value=1.5), max_size=6)}
)
VERIFY = {
    "version": st.sampled_from([1, 1, 1, 2, 0]),
    "session_id": st.sampled_from(["a", "b", "c", "", "x" * 200]),
    "tokens": TOKENS,
    "prompt_tokens": st.integers(min_value=-1, max_value=8),
    "draft": st.lists(st.integers(min_value=-1, max_value=270_000), max_size=4),
    "draft_probs": st.lists(DISTRIBUTION, max_size=4),
    "sampling": st.fixed_dictionaries(
        {},
        optional={
            "temperature": st.floats(min_value=-1, max_value=11, allow_nan=False),
            "seed": st.integers(min_value=-1, max_value=2**64),
        },
    ),
}
GENERATE = {  # cloud-only decoding: the target generates alone (max_tokens 1-2 when valid)
    "version": VERIFY["version"],
    "prompt": st.one_of(st.text(max_size=12), st.sampled_from(["", "a\ud800b"])),
    "messages": st.lists(
        st.fixed_dictionaries(
            {"role": st.sampled_from(["user", "system", "assistant", "tool"]), "content": st.text(max_size=8)}
        ),
        max_size=2,
    ),
    "tokens": TOKENS,
    "max_tokens": st.integers(min_value=-1, max_value=2),
    "sampling": VERIFY["sampling"],
}
VERIFIER_REQUESTS = st.one_of(
    st.tuples(st.just("POST"), st.just("/v1/generate"), body(GENERATE)),
    # A text prompt with version and max_tokens always there: valid generations are not left to chance.
    st.tuples(
        st.just("POST"),
        st.just("/v1/generate"),
        body(
            {
                **{name: GENERATE[name] for name in ("version", "prompt", "sampling")},
                "max_tokens": st.sampled_from([1, 2]),
            },
            required=frozenset({"version", "prompt", "max_tokens"}),
        ),
    ),
    st.tuples(st.just("POST"), st.just("/v1/verify"), body(VERIFY)),
    st.tuples(st.just("POST"), st.just("/v1/verify"), body(VERIFY)),
    st.tuples(
        st.just("POST"),
        st.just("/v1/sessions"),
        body({"session_id": VERIFY["session_id"], "tokens": TOKENS, "version": VERIFY["version"]}),
    ),
    st.tuples(
        st.sampled_from(["GET", "POST", "DELETE", "PUT"]),
        st.sampled_from(
            ["/v1/sessions/a", "/v1/sessions/zz", "/v1/ping", "/readyz", "/v1/verify", "/v1/generate", "/v9"]
        ),
        st.binary(max_size=16),
    ),
)


class Servers:
    """The verifier and the edge on loopback, in a child process (its memory is theirs alone)."""

    def __init__(self, target: Path, draft: Path) -> None:
        self.process = subprocess.Popen(
            [sys.executable, __file__, str(target), str(draft)],
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline()  # "PORTS verifier edge", once both serve
        assert line.startswith("PORTS"), line
        self.verifier_port, self.edge_port = (int(word) for word in line.split()[1:])

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise AssertionError("no VmRSS")

    def metric(self, port: int, name: str) -> float:
        text = Sender(port, {}).send("GET", "/metrics", b"")[1].decode()
        return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(name + " "))

    def close(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=60)


async def serve(target: Path, draft: Path) -> None:
    """The child: a real verifier (target) and a real edge (draft), until terminated."""
    engine = LlamaCppEngine(target, n_ctx=512, n_threads=1, max_sessions=4)
    verifier = create_verifier_app(
        VerifierSettings(max_queue=64), engine=engine, tokens=TokenSource(token=TOKEN)
    )
    runtime = LlamaRuntime(draft, n_ctx=512, n_threads=1)
    ports: list[int] = []
    for make in (
        lambda: verifier,
        lambda: create_edge_app(
            EdgeSettings(k=2, default_max_tokens=2, max_concurrent=2, max_queue=4),
            runtime=runtime,
            client=VerifierClient(f"http://127.0.0.1:{ports[0]}", TOKEN, retry_budget_s=1.0),
        ),
    ):
        runner = web.AppRunner(make(), access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        ports.append(int(runner.addresses[0][1]))
    print("PORTS", *ports, flush=True)
    await asyncio.Event().wait()


@pytest.fixture(scope="module")
def servers(target_file: Path, draft_file: Path) -> Iterator[Servers]:
    servers = Servers(target_file, draft_file)
    yield servers
    servers.close()


class Sender:
    """One keep-alive HTTP/1.1 connection; a fresh one whenever the server closed it."""

    def __init__(self, port: int, headers: dict[str, str]) -> None:
        self.port = port
        self.headers = headers
        self.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)

    def send(self, method: str, path: str, data: bytes) -> tuple[int, bytes]:
        for attempt in range(2):
            try:
                self.connection.request(
                    method, path, body=data, headers={**self.headers, "Content-Type": "application/json"}
                )
                response = self.connection.getresponse()
                return response.status, response.read()
            except (http.client.RemoteDisconnected, ConnectionError, http.client.CannotSendRequest):
                self.connection.close()
                self.connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
                if attempt:
                    raise
        raise AssertionError("unreachable")


def fuzz(
    strategy: st.SearchStrategy[tuple[str, str, bytes]], sender: Sender, on_count: Callable[[int], None]
) -> Counter[int]:
    statuses: Counter[int] = Counter()

    # Each example is a batch of independently drawn requests, sent in order: hypothesis's engine
    # costs more per example than drawing one request does (here 6.5 ms a request one per example,
    # 2.3 ms in batches of 10), and the fuzzer's CPU is most of the test's. The assertion names the
    # request that failed.
    @settings(
        max_examples=REQUESTS // BATCH,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
        derandomize=True,
    )
    @given(st.lists(strategy, min_size=BATCH, max_size=BATCH))
    def batch(requests: list[tuple[str, str, bytes]]) -> None:
        for method, path, data in requests:
            status, answer = sender.send(method, path, data)
            statuses[status] += 1
            on_count(sum(statuses.values()))
            assert status < 500, f"{method} {path} {data[:200]!r} -> {status} {answer[:300]!r}"
            assert len(answer) < 100_000

    batch()
    return statuses


def _check_memory(servers: Servers, marks: dict[str, float]) -> Callable[[int], None]:
    def on_count(count: int) -> None:
        if count == EARLY:
            marks["early"] = servers.rss_mb()

    return on_count


def test_fuzz_edge_api(servers: Servers) -> None:
    marks: dict[str, float] = {}
    sessions_before = servers.metric(servers.verifier_port, "edgespec_verifier_sessions")
    statuses = fuzz(EDGE_REQUESTS, Sender(servers.edge_port, {}), _check_memory(servers, marks))
    assert sum(statuses.values()) >= REQUESTS
    assert statuses[200] > 100, statuses  # the fuzzer did reach generation, not only validation
    time.sleep(3)  # the last session deletes run in the background (2 s limit each)
    assert servers.metric(servers.edge_port, "edgespec_edge_requests_in_flight") == 0
    # Every finished generation closed its verifier session.
    assert servers.metric(servers.verifier_port, "edgespec_verifier_sessions") <= sessions_before
    assert Sender(servers.edge_port, {}).send("GET", "/healthz", b"")[0] == 200
    rss = servers.rss_mb()
    assert rss - marks["early"] < MEMORY_GROWTH_LIMIT_MB, (marks, rss)
    print(f"edge fuzz: {sum(statuses.values())} requests, {dict(statuses)}, RSS {marks} -> {rss:.0f} MB")


def test_fuzz_verifier_api(servers: Servers) -> None:
    marks: dict[str, float] = {}
    sender = Sender(servers.verifier_port, {"Authorization": f"Bearer {TOKEN}"})
    statuses = fuzz(VERIFIER_REQUESTS, sender, _check_memory(servers, marks))
    assert sum(statuses.values()) >= REQUESTS
    assert statuses[200] > 100, statuses
    assert servers.metric(servers.verifier_port, "edgespec_verifier_generated_tokens_total") > 0  # reached
    assert servers.metric(servers.verifier_port, "edgespec_verifier_sessions") <= 4  # LRU-bounded
    assert sender.send("GET", "/readyz", b"")[0] == 200
    assert servers.metric(servers.verifier_port, "edgespec_verifier_queue_depth") == 0
    rss = servers.rss_mb()
    assert rss - marks["early"] < MEMORY_GROWTH_LIMIT_MB, (marks, rss)
    print(f"verifier fuzz: {sum(statuses.values())} requests, {dict(statuses)}, RSS {marks} -> {rss:.0f} MB")


if __name__ == "__main__":
    asyncio.run(serve(Path(sys.argv[1]), Path(sys.argv[2])))
