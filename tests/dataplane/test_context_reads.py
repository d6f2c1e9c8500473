"""edgespec_verifier_context_tokens_total{kind}: what a replica had to compute of a session's context.

The measurement behind verifier scaling (docs/scaling.md): a session whose rounds stay on one replica
computes its prompt once and re-reads nothing; the same session's next round on another replica (a
second engine over the same weights: its own KV state, as a second pod has), or after its sequence was
evicted, re-reads its whole generated context. Real GGUF target, llama.cpp engine, over HTTP.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from aiohttp import ClientSession
from aiohttp.test_utils import TestServer
from edgespec.wire import VerifyRequest
from edgespec_edge.loop import VerifierClient
from edgespec_verifier.auth import TokenSource
from edgespec_verifier.engines.llamacpp import LlamaCppEngine
from edgespec_verifier.server import VerifierSettings, create_app
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from dataplane.conftest import TOKEN, target_greedy

K = 3
ROUNDS = 5


async def context_tokens(server: TestServer) -> dict[str, float]:
    """The replica's counter by kind, read from its /metrics as Prometheus would."""
    async with ClientSession() as http, http.get(server.make_url("/metrics")) as response:
        text = await response.text()
    return {
        sample.labels["kind"]: sample.value
        for family in text_string_to_metric_families(text)
        if family.name == "edgespec_verifier_context_tokens"
        for sample in family.samples
        if sample.name == "edgespec_verifier_context_tokens_total"
    }


@asynccontextmanager
async def replica(engine: LlamaCppEngine) -> AsyncIterator[tuple[TestServer, VerifierClient]]:
    app = create_app(
        VerifierSettings(), registry=CollectorRegistry(), engine=engine, tokens=TokenSource(token=TOKEN)
    )
    server = TestServer(app)
    await server.start_server()
    client = VerifierClient(str(server.make_url("")), TOKEN, retry_budget_s=1.0)
    try:
        yield server, client
    finally:
        await client.close()
        await server.close()


class Session:
    """An edge session's context, grown by each verdict as the edge's loop grows it."""

    def __init__(self, session_id: str, prompt: list[int], continuation: list[int]) -> None:
        self.session_id = session_id
        self.prompt = prompt
        self.context = list(prompt)
        self.continuation = continuation  # the target's own tokens: drafts that are (mostly) accepted

    def request(self, wrong_last: bool) -> VerifyRequest:
        generated = len(self.context) - len(self.prompt)
        draft = self.continuation[generated : generated + K]
        if wrong_last and draft:  # a rejection: the round ends with a correction instead of a bonus
            draft[-1] = (draft[-1] + 1) % 1000 + 1
        return VerifyRequest(
            session_id=self.session_id,
            tokens=self.context,
            prompt_tokens=len(self.prompt),
            draft=draft,
        )

    async def round(self, client: VerifierClient, wrong_last: bool = False) -> None:
        request = self.request(wrong_last)
        verdict, _ = await client.verify(request)
        self.context += [*request.draft[: verdict.accepted], verdict.next_token]


def tokens_of(engine: LlamaCppEngine, text: str) -> tuple[list[int], list[int]]:
    prompt = engine.runtime.tokenize(text)
    return prompt, target_greedy(engine, prompt, ROUNDS * (K + 1) + K + 2)


async def test_rounds_on_one_replica_read_the_prompt_once_and_reread_nothing(
    engine: LlamaCppEngine,
) -> None:
    prompt, continuation = tokens_of(engine, "Context reads on one replica: the prompt, once.")
    session = Session("reads-steady", prompt, continuation)
    async with replica(engine) as (server, client):
        assert await context_tokens(server) == {"prompt": 0.0, "reread": 0.0}
        for i in range(ROUNDS):
            await session.round(client, wrong_last=i % 2 == 1)
        counts = await context_tokens(server)
    engine.close_session(session.session_id)
    assert len(session.context) > len(prompt) + ROUNDS  # the rounds did generate
    assert counts == {"prompt": len(prompt), "reread": 0.0}


async def test_a_session_on_a_fresh_replica_or_evicted_rereads_its_generated_context(
    engine: LlamaCppEngine,
) -> None:
    prompt, continuation = tokens_of(engine, "Context reads when a session moves between replicas.")
    session = Session("reads-moved", prompt, continuation)
    other_prompt, other_continuation = tokens_of(engine, "Another session, taking the only sequence.")
    other = Session("reads-other", other_prompt, other_continuation)
    # Replica B: the same weights, its own KV sequences (a second pod); one sequence, so LRU evicts.
    second = LlamaCppEngine(runtime=engine.runtime, max_sessions=1)
    try:
        async with replica(engine) as (_, client_a), replica(second) as (server_b, client_b):
            for i in range(3):
                await session.round(client_a, wrong_last=i == 1)
            moved_context = len(session.context)
            await session.round(client_b)  # the session's next round lands on replica B
            moved = await context_tokens(server_b)
            # Prompt counted as prompt; every generated token but the last (this round's new correction
            # or bonus from replica A's verdict) was computed by A and is re-read here.
            assert moved == {"prompt": len(prompt), "reread": moved_context - 1 - len(prompt)}

            await session.round(client_b)  # settled on B: nothing more re-read
            assert await context_tokens(server_b) == moved

            await other.round(client_b)  # takes B's only sequence: the session is evicted
            after_other = await context_tokens(server_b)
            assert after_other == {"prompt": moved["prompt"] + len(other_prompt), "reread": moved["reread"]}

            evicted_context = len(session.context)
            await session.round(client_b)
            evicted = await context_tokens(server_b)
            assert evicted == {
                "prompt": after_other["prompt"] + len(prompt),
                "reread": after_other["reread"] + evicted_context - 1 - len(prompt),
            }
    finally:
        engine.close_session(session.session_id)
        second.close()
    assert target_greedy(engine, prompt, 1) == continuation[:1]  # the shared weights outlive replica B
