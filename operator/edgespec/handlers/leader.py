"""Leader election on a ``coordination.k8s.io`` Lease: of several replicas, one reconciles.

Why not kopf's peering: it freezes only kopf's own watch streams, while this operator also runs its
own work-queue workers, child watches and HTTP server, which would go on acting on a stale cache;
and replicas of equal priority all freeze. So, as controller-runtime does, a replica takes the Lease
before kopf starts at all, renews it while it runs, and exits the moment it cannot (the pod restarts
and queues up as a standby). A standby holds nothing, so it cannot act on stale state.

Timing (client-go's defaults): a Lease held for 15 s, renewed every 5 s, a standby checking every
2 s. Expiry is judged by the local clock since the standby last saw the record change, never by
the holder's timestamps, so clock skew between nodes does not matter. A SIGKILLed leader is replaced
about 15-17 s later; one that stops cleanly releases the Lease and is replaced within 2 s.
A standby answers the liveness and readiness probes (so ``helm --wait`` and rollouts complete) and
refuses telemetry with 503 (the draft servers keep the counts and retry).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlparse

from lightkube import ApiError, Client
from lightkube.models.coordination_v1 import LeaseSpec
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.coordination_v1 import Lease
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from edgespec.handlers.metrics import OperatorMetrics

log = logging.getLogger("edgespec.leader")

LEASE_DURATION_S = 15
RENEW_EVERY_S = 5.0
RETRY_EVERY_S = 2.0


class Elector:
    """Takes and keeps one Lease for this process (identity: host name and pid)."""

    def __init__(self, client: Client, namespace: str, name: str, identity: str | None = None) -> None:
        self.client = client
        self.namespace = namespace
        self.name = name
        self.identity = identity or f"{os.uname().nodename}-{os.getpid()}"
        self._stop = threading.Event()

    def acquire(self) -> None:
        """Block until this process holds the Lease."""
        observed: tuple[str, str] | None = None
        observed_at = time.monotonic()
        announced = False
        while True:
            try:
                lease = self.client.get(Lease, self.name, namespace=self.namespace)
            except ApiError as exc:
                if exc.status.code != 404:
                    raise
                if self._create():
                    return
                continue
            spec = lease.spec or LeaseSpec()
            record = (spec.holderIdentity or "", str(spec.renewTime))
            if record != observed:
                observed, observed_at = record, time.monotonic()
            held = bool(spec.holderIdentity) and spec.holderIdentity != self.identity
            if held and time.monotonic() - observed_at < (spec.leaseDurationSeconds or LEASE_DURATION_S):
                if not announced:
                    log.info("standby: %s holds the Lease %s", spec.holderIdentity, self.name)
                    announced = True
                time.sleep(RETRY_EVERY_S)
                continue
            if self._take(lease):
                return

    def _create(self) -> bool:
        now = datetime.now(UTC)
        lease = Lease(
            metadata=ObjectMeta(name=self.name, namespace=self.namespace),
            spec=LeaseSpec(
                holderIdentity=self.identity,
                leaseDurationSeconds=LEASE_DURATION_S,
                acquireTime=now,
                renewTime=now,
                leaseTransitions=0,
            ),
        )
        try:
            self.client.create(lease)
        except ApiError as exc:
            if exc.status.code == 409:  # another replica created it first
                return False
            raise
        log.info("leading: created the Lease %s/%s as %s", self.namespace, self.name, self.identity)
        return True

    def _take(self, lease: Lease) -> bool:
        now = datetime.now(UTC)
        spec = lease.spec or LeaseSpec()
        previous = spec.holderIdentity
        spec.holderIdentity = self.identity
        spec.leaseDurationSeconds = LEASE_DURATION_S
        spec.acquireTime = now
        spec.renewTime = now
        spec.leaseTransitions = (spec.leaseTransitions or 0) + (1 if previous else 0)
        lease.spec = spec
        try:  # replace carries the resourceVersion: of two standbys racing, one gets a 409
            self.client.replace(lease)
        except ApiError as exc:
            if exc.status.code == 409:
                return False
            raise
        log.info("leading: took the Lease %s/%s from %s", self.namespace, self.name, previous or "nobody")
        return True

    def keep(self) -> None:
        """Renew in a daemon thread; exit the process as soon as leadership cannot be kept."""

        def renew() -> None:
            last_ok = time.monotonic()
            while not self._stop.wait(RENEW_EVERY_S):
                try:
                    lease = self.client.get(Lease, self.name, namespace=self.namespace)
                    if lease.spec is None or lease.spec.holderIdentity != self.identity:
                        log.error("lost the Lease to %s; exiting", lease.spec and lease.spec.holderIdentity)
                        os._exit(75)
                    lease.spec.renewTime = datetime.now(UTC)
                    self.client.replace(lease)
                    last_ok = time.monotonic()
                except Exception as exc:
                    if time.monotonic() - last_ok > LEASE_DURATION_S - RENEW_EVERY_S:
                        log.error("could not renew the Lease for %.0f s (%s); exiting", LEASE_DURATION_S, exc)
                        os._exit(75)
                    log.warning("renewing the Lease failed (%s); retrying", exc)

        threading.Thread(target=renew, name="lease-renewal", daemon=True).start()

    def release(self) -> None:
        """On a clean stop: give the Lease up so a standby takes over at once."""
        self._stop.set()
        try:
            lease = self.client.get(Lease, self.name, namespace=self.namespace)
            if lease.spec is not None and lease.spec.holderIdentity == self.identity:
                lease.spec.holderIdentity = None
                lease.spec.renewTime = None
                self.client.replace(lease)
                log.info("released the Lease %s/%s", self.namespace, self.name)
        except Exception as exc:
            log.warning("could not release the Lease: %s", exc)


class StandbyHealth:
    """While waiting for the Lease, answer the probes, so a standby counts as alive and ready.

    Liveness on kopf's endpoint, readiness (``/healthz``) on the metrics port; telemetry sent to a
    standby through the Service gets 503, which the draft servers treat as "keep the counts and
    retry" (their next report carries them to whichever replica answers). Both stop when the replica
    leads, just before kopf and the operator's own server take the ports.
    """

    def __init__(
        self,
        liveness_url: str | None,
        metrics_host: str,
        metrics_port: int,
        metrics: OperatorMetrics | None = None,
    ) -> None:
        self._servers: list[ThreadingHTTPServer] = []
        registry = (metrics if metrics is not None else OperatorMetrics()).registry

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if urlparse(self.path).path == "/metrics":
                    # A valid exposition, so a scrape of the standby succeeds: every family declared,
                    # none with a sample (the leader holds the state); a bare "standby" failed parsing.
                    self._answer(200, generate_latest(registry), CONTENT_TYPE_LATEST)
                else:
                    self._answer(200, b"standby")

            def do_POST(self) -> None:
                self._answer(503, b'{"error": "this replica is a standby; retry"}')

            def _answer(self, code: int, body: bytes, content_type: str = "text/plain") -> None:
                self.send_response(code)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_: object) -> None:
                return

        addresses = []
        if liveness_url:
            parsed = urlparse(liveness_url)
            addresses.append((parsed.hostname or "0.0.0.0", parsed.port or 8081))
        if metrics_port:
            addresses.append((metrics_host, metrics_port))
        for address in addresses:
            server = ThreadingHTTPServer(address, Handler)
            threading.Thread(target=server.serve_forever, name="standby-probes", daemon=True).start()
            self._servers.append(server)

    def stop(self) -> None:
        for server in self._servers:
            server.shutdown()
            server.server_close()
