"""The draft-verify loop: draft K tokens locally, have the verifier judge them, commit only its verdict.

Each round the draft model proposes K tokens (argmax when greedy; when sampling, a draw from its top-N
renormalised distribution, which travels with the token so the verifier can rejection-sample exactly),
one ``POST /v1/verify`` carries the committed context plus the drafts over a keep-alive connection, and
the round commits ``accepted`` drafts plus the verifier's own next token. Tokens are handed to the
caller only after that verdict: nothing unverified ever reaches a client. K is read from the live
``SpeculativeLength`` at the start of every round, so a ConfigMap change applies from the next round.

An unreachable or overloaded verifier is retried with exponential backoff for at most
``retry_budget_s`` per round; after that the request fails with ``VerifierUnavailable`` and a message
naming the verifier URL and the last error. A 4xx answer (a wrong token, say) is not retried.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
import urllib.parse
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from edgespec.tls import client_context
from edgespec.wire import (
    GENERATE_PATH,
    PING_PATH,
    SESSIONS_PATH,
    VERIFY_PATH,
    ErrorBody,
    ErrorDetail,
    GenerateEvent,
    GenerateRequest,
    SamplingParams,
    SparseDistribution,
    VerifyRequest,
    VerifyResponse,
)

from edgespec_edge.config import SpeculativeLength
from edgespec_edge.llama_kv import KVSequence, LlamaRuntime


class VerifierUnavailable(RuntimeError):
    """The verifier gave no verdict within the call's deadline (or retry budget).

    ``kind`` names the cause: ``timeout`` (no answer within the deadline), ``refused`` (nothing
    listens), ``unreachable`` (another network error), ``tls`` (the certificate is not trusted),
    ``overloaded`` (503 from a full queue) or ``server_error`` (another 5xx).
    """

    def __init__(self, message: str, kind: str) -> None:
        super().__init__(message)
        self.kind = kind


class VerifierRejected(RuntimeError):
    """The verifier refused the request (4xx): retrying cannot help.

    ``detail`` is the verifier's own error, when it sent one (a cloud-only prompt it cannot take)."""

    def __init__(self, message: str, status: int = 400, detail: ErrorDetail | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.detail = detail


class QueueFull(RuntimeError):
    """Every request slot is busy and the admission queue is full."""


class ClientGone(Exception):
    """The client that asked for this generation has disconnected."""


@dataclass(frozen=True)
class RoundStats:
    k: int
    drafted: int
    accepted: int
    draft_s: float
    round_trip_s: float
    verify_s: float


@dataclass
class GenerationStats:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    finish_reason: str = "length"
    elapsed_s: float = 0.0
    first_round_s: float = 0.0
    """Time to the first verified tokens (prompt reads on both sides plus one round): the TTFT."""
    first_round_tokens: int = 0
    queue_s: float = 0.0
    """Time waiting for a request slot before the first round."""
    rounds: list[RoundStats] = field(default_factory=list)

    @property
    def decode_tokens_per_s(self) -> float:
        """Steady-state goodput: tokens after the first round over the time after it."""
        seconds = self.elapsed_s - self.first_round_s
        return (self.completion_tokens - self.first_round_tokens) / seconds if seconds > 0 else 0.0

    @property
    def drafted(self) -> int:
        return sum(r.drafted for r in self.rounds)

    @property
    def accepted(self) -> int:
        return sum(r.accepted for r in self.rounds)


class _Connection:
    """One keep-alive HTTP/1.1 connection to the verifier: a request written whole, a response read."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    async def exchange(self, request: bytes) -> tuple[int, bytes, bool]:
        """(status, body, connection reusable) for one request written in a single call."""
        self.writer.write(request)
        version, code = (await self.reader.readuntil(b"\r\n")).split()[:2]
        status = int(code)
        length: int | None = None
        chunked = False
        keep_alive = version == b"HTTP/1.1"
        while (line := await self.reader.readuntil(b"\r\n")) != b"\r\n":
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"transfer-encoding":
                chunked = b"chunked" in value.lower()
            elif name == b"connection":
                keep_alive = value.strip().lower() != b"close"
        if status in (204, 304) or status < 200:
            return status, b"", keep_alive
        if chunked:
            body = bytearray()
            while size := int((await self.reader.readuntil(b"\r\n")).split(b";", 1)[0], 16):
                body += await self.reader.readexactly(size + 2)
                del body[-2:]
            while await self.reader.readuntil(b"\r\n") != b"\r\n":  # trailers
                pass
            return status, bytes(body), keep_alive
        if length is None:  # delimited by the end of the connection
            return status, await self.reader.read(), False
        return status, await self.reader.readexactly(length), keep_alive

    def close(self) -> None:
        self.writer.close()


class _Backoff:
    """Exponential backoff between attempts of one call, for at most ``budget_s`` from its start."""

    def __init__(self, base_url: str, budget_s: float) -> None:
        self.base_url = base_url
        self.started = time.monotonic()
        self.until = self.started + budget_s
        self.delay = 0.05

    async def wait(self, kind: str, cause: str) -> None:
        """Sleep before the next attempt, or raise ``VerifierUnavailable`` when the budget is spent."""
        if time.monotonic() + self.delay > self.until:
            waited = time.monotonic() - self.started
            raise VerifierUnavailable(f"verifier {self.base_url}: {cause} (retried for {waited:.1f} s)", kind)
        await asyncio.sleep(self.delay)
        self.delay = min(self.delay * 2, 1.0)


class VerifierClient:
    """Keep-alive HTTP/1.1 client of the verify endpoint, with bounded retries.

    A small client over asyncio streams rather than aiohttp's ``ClientSession``: a round is one POST of
    a JSON body to one host, and the session's general machinery (URL joining, header merging, cookie
    jar, tracing, timers) cost about 0.4 ms per call here once the process wakes from waiting on a
    round, a third of the whole per-call overhead (docs/dataplane.md, "Per-call overhead"). It speaks
    what the verifier (an aiohttp server) answers: Content-Length or chunked bodies, keep-alive, http or
    https. Connections are pooled (at most ``connections`` at once); a pooled connection the verifier
    has closed meanwhile is replaced at once, without counting as a failed attempt.
    """

    def __init__(
        self,
        base_url: str,
        token: str | None,
        *,
        timeout_s: float = 15.0,
        retry_budget_s: float = 5.0,
        connections: int = 16,
        ca_file: Path | str | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.retry_budget_s = retry_budget_s
        self.timeout_s = timeout_s
        url = urllib.parse.urlsplit(self.base_url)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ValueError(f"verifier URL {base_url!r}: expected http://HOST[:PORT] or https://...")
        self._host = url.hostname
        self._port = url.port or (443 if url.scheme == "https" else 80)
        # https: the certificate must chain to ca_file (or the system's CAs) and name the host.
        self._ssl = client_context(ca_file) if url.scheme == "https" else None
        self._prefix = url.path
        headers = f"Host: {url.netloc}\r\n"
        if token:
            headers += f"Authorization: Bearer {token}\r\n"
        self._headers = headers
        self._authorization = f"Bearer {token}" if token else None
        self._http: Any = None  # aiohttp.ClientSession of cloud-only streams, made on first use
        self._idle: list[_Connection] = []
        self._slots = asyncio.Semaphore(connections)
        self._closed = False
        self._background: set[asyncio.Task[None]] = set()

    def _request(self, method: str, path: str, body: bytes = b"") -> bytes:
        content = "Content-Type: application/json\r\n" if body else ""
        head = f"{method} {self._prefix}{path} HTTP/1.1\r\n{self._headers}{content}"
        return f"{head}Content-Length: {len(body)}\r\n\r\n".encode("latin-1") + body

    async def _exchange(self, request: bytes, timeout_s: float) -> tuple[int, bytes]:
        """(status, body) of one request, on a pooled connection or a new one, within ``timeout_s``."""
        async with asyncio.timeout(timeout_s), self._slots:
            while True:
                reused = bool(self._idle)
                connection = (
                    self._idle.pop()
                    if reused
                    else _Connection(*await asyncio.open_connection(self._host, self._port, ssl=self._ssl))
                )
                try:
                    status, body, keep_alive = await connection.exchange(request)
                except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
                    connection.close()
                    if reused:  # closed by the verifier while idle: try the next (or a new) connection
                        continue
                    raise
                except BaseException:
                    connection.close()
                    raise
                if keep_alive and not self._closed:
                    self._idle.append(connection)
                else:
                    connection.close()
                return status, body

    async def verify(self, request: VerifyRequest) -> tuple[VerifyResponse, float]:
        """The verdict and the round-trip time of the successful attempt, seconds.

        One deadline covers the whole call, retries included: ``timeout_s`` from now. Connection
        errors and 5xx are retried with backoff while the retry budget and the deadline last; a 4xx
        or an untrusted certificate fails at once. The error names the cause.
        """
        message = self._request("POST", VERIFY_PATH, request.model_dump_json(exclude_none=True).encode())
        backoff = _Backoff(self.base_url, min(self.timeout_s, self.retry_budget_s))
        deadline = backoff.started + self.timeout_s
        while True:
            started = time.perf_counter()
            try:
                status, body = await self._exchange(message, deadline - time.monotonic())
                if status == 200:
                    return VerifyResponse.model_validate_json(body), time.perf_counter() - started
                detail = _error_message(body)
                if status < 500:
                    raise VerifierRejected(f"verifier {self.base_url} answered {status}: {detail}", status)
                kind = "overloaded" if status == 503 else "server_error"
                cause = f"answered {status}: {detail}"
            except TimeoutError:
                raise VerifierUnavailable(
                    f"verifier {self.base_url} gave no verdict within the {self.timeout_s:g} s verify "
                    "deadline (EDGESPEC_EDGE_VERIFY_TIMEOUT_S)",
                    "timeout",
                ) from None
            except ssl.SSLCertVerificationError as exc:
                raise VerifierUnavailable(
                    f"verifier {self.base_url}: TLS certificate not trusted ({exc.verify_message}); "
                    "check EDGESPEC_EDGE_CA_FILE",
                    "tls",
                ) from None
            except ConnectionRefusedError:
                kind, cause = "refused", "connection refused (is the verifier running and listening?)"
            except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
                kind, cause = "unreachable", f"{type(exc).__name__}: {exc}"
            except ValueError as exc:  # not HTTP, or not a verdict
                kind, cause = "server_error", f"unreadable answer: {str(exc)[:200]}"
            await backoff.wait(kind, cause)

    async def generate(self, request: GenerateRequest) -> AsyncGenerator[GenerateEvent, None]:
        """Cloud-only decoding: the verifier's ``GenerateEvent`` lines, as they arrive.

        Until the stream starts, failures are retried like a verify call (connection errors and 5xx,
        within the retry budget; a 4xx at once, as ``VerifierRejected`` carrying the verifier's error).
        Once it runs, each line must arrive within ``timeout_s``; an ``error`` line, a stall or a
        stream cut short raises ``VerifierUnavailable``. Its own connection per stream (aiohttp's), as
        a stream holds it for the whole generation."""
        import aiohttp

        if self._http is None:
            self._http = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(
                    total=None, sock_connect=self.timeout_s, sock_read=self.timeout_s
                )
            )
        url = f"{self.base_url}{GENERATE_PATH}"
        headers = {"Authorization": self._authorization} if self._authorization else {}
        payload = request.model_dump_json(exclude_none=True).encode()
        backoff = _Backoff(self.base_url, min(self.timeout_s, self.retry_budget_s))
        while True:
            try:
                response = await self._http.post(
                    url,
                    data=payload,
                    headers={**headers, "Content-Type": "application/json"},
                    ssl=self._ssl if self._ssl is not None else True,
                )
            except aiohttp.ClientConnectorCertificateError as exc:
                raise VerifierUnavailable(
                    f"verifier {self.base_url}: TLS certificate not trusted ({exc}); "
                    "check EDGESPEC_EDGE_CA_FILE",
                    "tls",
                ) from None
            except aiohttp.ClientConnectorError as exc:
                refused = isinstance(exc.os_error, ConnectionRefusedError)
                kind = "refused" if refused else "unreachable"
                cause = "connection refused (is the verifier running and listening?)" if refused else str(exc)
            except TimeoutError:
                raise VerifierUnavailable(
                    f"verifier {self.base_url} did not answer within {self.timeout_s:g} s "
                    "(EDGESPEC_EDGE_VERIFY_TIMEOUT_S)",
                    "timeout",
                ) from None
            except aiohttp.ClientError as exc:
                kind, cause = "unreachable", f"{type(exc).__name__}: {exc}"
            else:
                if response.status == 200:
                    break
                body = await response.read()
                response.release()
                if response.status < 500:
                    detail = _error_detail(body)
                    message = detail.message if detail is not None else _error_message(body)
                    raise VerifierRejected(
                        f"verifier {self.base_url} answered {response.status}: {message}",
                        response.status,
                        detail,
                    )
                kind = "overloaded" if response.status == 503 else "server_error"
                cause = f"answered {response.status}: {_error_message(body)}"
            await backoff.wait(kind, cause)
        try:
            while True:
                try:
                    line = await response.content.readline()
                except TimeoutError:
                    raise VerifierUnavailable(
                        f"verifier {self.base_url} sent nothing for {self.timeout_s:g} s mid-generation",
                        "timeout",
                    ) from None
                except aiohttp.ClientError as exc:
                    raise VerifierUnavailable(
                        f"verifier {self.base_url}: the generation stream broke ({type(exc).__name__})",
                        "unreachable",
                    ) from None
                if not line:
                    raise VerifierUnavailable(
                        f"verifier {self.base_url}: the generation stream ended before its end", "unreachable"
                    )
                try:
                    event = GenerateEvent.model_validate_json(line)
                except ValueError as exc:
                    raise VerifierUnavailable(
                        f"verifier {self.base_url}: unreadable generation line: {str(exc)[:200]}",
                        "server_error",
                    ) from None
                if event.error is not None:
                    raise VerifierUnavailable(
                        f"verifier {self.base_url} failed mid-generation: {event.error.message}",
                        "server_error",
                    )
                yield event
                if event.finish_reason is not None:
                    return
        finally:
            response.close()

    async def probe(self, timeout_s: float = 2.0) -> str | None:
        """None when the verifier answers and accepts the token; else why not (for ``/readyz``)."""
        try:
            status, body = await self._exchange(self._request("GET", PING_PATH), timeout_s)
        except TimeoutError:
            return f"verifier {self.base_url} did not answer within {timeout_s:g} s"
        except ssl.SSLCertVerificationError as exc:
            return f"verifier {self.base_url}: TLS certificate not trusted ({exc.verify_message})"
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError) as exc:
            return f"verifier {self.base_url} unreachable: {type(exc).__name__}: {exc}"
        if status == 200:
            return None
        return f"verifier {self.base_url} answered {status}: {_error_message(body)}"

    def close_session(self, session_id: str) -> None:
        """Best effort, in the background: free the verifier's KV state for a finished session.

        Nobody waits for it (a hung verifier must not hold a finished request), and it gets a short
        deadline of its own.
        """
        if self._closed:
            return
        task = asyncio.get_running_loop().create_task(self._delete_session(session_id))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _delete_session(self, session_id: str) -> None:
        with contextlib.suppress(TimeoutError, OSError, asyncio.IncompleteReadError, ValueError):
            await self._exchange(
                self._request("DELETE", f"{SESSIONS_PATH}/{session_id}"), min(2.0, self.timeout_s)
            )

    async def drain(self) -> None:
        """Wait for the background session deletes (tests; ``close`` cancels them)."""
        while self._background:
            await asyncio.gather(*self._background, return_exceptions=True)

    async def close(self) -> None:
        self._closed = True
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        if self._http is not None:
            await self._http.close()
        idle, self._idle = self._idle, []
        for connection in idle:
            connection.close()
            with contextlib.suppress(OSError):
                await connection.writer.wait_closed()


def _error_detail(body: bytes) -> ErrorDetail | None:
    try:
        return ErrorBody.model_validate_json(body).error
    except ValueError:
        return None


def _error_message(body: bytes) -> str:
    try:
        return ErrorBody.model_validate_json(body).error.message
    except ValueError:
        return body[:200].decode("utf-8", "replace")


def draft_distribution(row: np.ndarray, temperature: float, top_n: int) -> SparseDistribution:
    """The top-``top_n`` draft distribution at ``temperature``, renormalised: what the draft samples."""
    top = np.argpartition(row, -top_n)[-top_n:] if top_n < row.shape[0] else np.arange(row.shape[0])
    scaled = row[top].astype(np.float64) / temperature
    weights = np.exp(scaled - scaled.max())
    probs = weights / weights.sum()
    keep = probs > 0.0
    probs = probs[keep] / probs[keep].sum()
    return SparseDistribution(tokens=[int(t) for t in top[keep]], probs=[float(p) for p in probs])


def propose(
    sequence: KVSequence,
    context: Sequence[int],
    k: int,
    sampling: SamplingParams,
    top_n: int,
    rng: np.random.Generator,
    is_end: Callable[[int], bool],
) -> tuple[list[int], list[SparseDistribution] | None]:
    """Up to ``k`` draft tokens after ``context`` (fewer if the draft ends the text), blocking."""
    drafted: list[int] = []
    distributions: list[SparseDistribution] = []
    for _ in range(k):
        tokens = [*context, *drafted]
        row = sequence.logits(tokens, first_row=len(tokens) - 1)[0]
        if sampling.greedy:
            token = int(np.argmax(row))
        else:
            q = draft_distribution(row, sampling.temperature, top_n)
            token = q.tokens[int(rng.choice(len(q.tokens), p=np.asarray(q.probs)))]
            distributions.append(q)
        drafted.append(token)
        if is_end(token):
            break
    return drafted, (None if sampling.greedy else distributions)


class Admission:
    """At most ``max_concurrent`` requests generate at once; at most ``max_queue`` more wait for a slot.

    A request beyond that gets ``QueueFull`` at once (the server answers 429), so waiting stays bounded.
    """

    def __init__(self, max_concurrent: int = 4, max_queue: int = 16) -> None:
        self._slots = asyncio.Semaphore(max_concurrent)
        self.max_concurrent = max_concurrent
        self.max_queue = max_queue
        self.waiting = 0
        self.busy = 0

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        if self._slots.locked() and self.waiting >= self.max_queue:
            raise QueueFull(
                f"all {self.max_concurrent} request slots are busy and {self.waiting} requests are queued"
            )
        self.waiting += 1
        try:
            await self._slots.acquire()
        finally:
            self.waiting -= 1
        self.busy += 1
        try:
            yield
        finally:
            self.busy -= 1
            self._slots.release()


class Drafter(Admission):
    """The draft model: a pool of KV sequences, the one thread that runs them, and admission."""

    def __init__(self, runtime: LlamaRuntime, max_concurrent: int = 4, max_queue: int = 16) -> None:
        super().__init__(max_concurrent, max_queue)
        self.runtime = runtime
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="draft")
        self._free: list[KVSequence] = []

    @contextlib.asynccontextmanager
    async def sequence(self) -> AsyncIterator[KVSequence]:
        async with self.slot():
            if self._free:
                sequence = self._free.pop()
            else:
                sequence = await asyncio.get_running_loop().run_in_executor(
                    self.executor, self.runtime.new_sequence
                )
            try:
                yield sequence
            finally:
                self._free.append(sequence)

    def close(self) -> None:
        self.executor.shutdown(wait=True)
        for sequence in self._free:
            sequence.close()
        self._free.clear()


def _split_at_end(tokens: list[int], is_end: Callable[[int], bool]) -> tuple[list[int], bool]:
    for index, token in enumerate(tokens):
        if is_end(token):
            return tokens[:index], True
    return tokens, False


def _never(_token: int) -> bool:
    return False


async def speculative_generate(
    drafter: Drafter,
    client: VerifierClient,
    prompt_tokens: Sequence[int],
    *,
    max_tokens: int,
    k_source: SpeculativeLength,
    sampling: SamplingParams,
    top_n: int = 32,
    stats: GenerationStats | None = None,
    on_round: Callable[[RoundStats], None] | None = None,
    client_gone: Callable[[], bool] | None = None,
    ignore_eos: bool = False,
) -> AsyncGenerator[list[int], None]:
    """Yield verified tokens, round by round, until ``max_tokens`` or the end of the text.

    ``client_gone`` is asked before every round (the first one included): once it says yes the
    generation stops with ``ClientGone``, so an abandoned request costs at most the round in flight.
    With ``ignore_eos`` the end of the text stops nothing (drafting included): ``max_tokens`` are made.
    """
    stats = stats if stats is not None else GenerationStats()
    stats.prompt_tokens = len(prompt_tokens)
    runtime = drafter.runtime
    is_end = _never if ignore_eos else runtime.is_end_of_generation
    rng = np.random.default_rng(sampling.seed)
    context = list(prompt_tokens)
    session_id = uuid.uuid4().hex
    started = time.perf_counter()
    loop = asyncio.get_running_loop()
    try:
        async with drafter.sequence() as sequence:
            stats.queue_s = time.perf_counter() - started
            while stats.completion_tokens < max_tokens:
                if client_gone is not None and client_gone():
                    raise ClientGone("the client disconnected")
                if len(context) >= runtime.n_ctx:
                    stats.finish_reason = "length"
                    return
                k = k_source.current()
                k_round = max(
                    0, min(k, max_tokens - stats.completion_tokens - 1, runtime.n_ctx - len(context) - 1)
                )
                draft_started = time.perf_counter()
                drafted, distributions = await loop.run_in_executor(
                    drafter.executor, propose, sequence, context, k_round, sampling, top_n, rng, is_end
                )
                draft_s = time.perf_counter() - draft_started
                round_seed = None if sampling.seed is None else int(rng.integers(0, 2**62))
                request = VerifyRequest(
                    session_id=session_id,
                    tokens=context,
                    prompt_tokens=len(prompt_tokens),
                    draft=drafted,
                    draft_probs=distributions,
                    sampling=SamplingParams(temperature=sampling.temperature, seed=round_seed),
                )
                verdict, round_trip_s = await client.verify(request)
                if not 0 <= verdict.accepted <= len(drafted):
                    raise VerifierRejected(f"verifier accepted {verdict.accepted} of {len(drafted)} drafts")
                round_stats = RoundStats(
                    k=k,
                    drafted=len(drafted),
                    accepted=verdict.accepted,
                    draft_s=draft_s,
                    round_trip_s=round_trip_s,
                    verify_s=verdict.verify_s,
                )
                stats.rounds.append(round_stats)
                if on_round is not None:
                    on_round(round_stats)
                committed = [*drafted[: verdict.accepted], verdict.next_token]
                context.extend(committed)
                emitted, ended = _split_at_end(committed, is_end)
                emitted = emitted[: max_tokens - stats.completion_tokens]
                stats.completion_tokens += len(emitted)
                if len(stats.rounds) == 1:
                    stats.first_round_s = time.perf_counter() - started
                    stats.first_round_tokens = len(emitted)
                if emitted:
                    yield emitted
                if ended:
                    stats.finish_reason = "stop"
                    return
            stats.finish_reason = "length"
    finally:
        stats.elapsed_s = time.perf_counter() - started
        if stats.rounds:
            client.close_session(session_id)


async def cloud_generate(
    admission: Admission,
    client: VerifierClient,
    request: GenerateRequest,
    *,
    stats: GenerationStats | None = None,
    client_gone: Callable[[], bool] | None = None,
) -> AsyncGenerator[str, None]:
    """Cloud-only decoding: yield the verifier's own generation as text, in a request slot of ours.

    ``stats`` gets the prompt and completion token counts the verifier reports and the finish reason;
    ``client_gone`` is asked between pieces (leaving the stream closes it, which stops the verifier)."""
    stats = stats if stats is not None else GenerationStats()
    started = time.perf_counter()
    try:
        async with admission.slot():
            stats.queue_s = time.perf_counter() - started
            events = client.generate(request)
            try:
                async for event in events:
                    if client_gone is not None and client_gone():
                        raise ClientGone("the client disconnected")
                    if event.prompt_tokens is not None:
                        stats.prompt_tokens = event.prompt_tokens
                    stats.completion_tokens += event.tokens
                    if event.text and not stats.first_round_s:
                        stats.first_round_s = time.perf_counter() - started
                        stats.first_round_tokens = stats.completion_tokens
                    if event.finish_reason is not None:
                        stats.finish_reason = event.finish_reason
                    if event.text:
                        yield event.text
            finally:
                await events.aclose()
    finally:
        stats.elapsed_s = time.perf_counter() - started
