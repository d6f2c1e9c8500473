"""TLS contexts for the edge-to-cloud links (verifier, operator telemetry): stdlib ``ssl`` only.

A server serves HTTPS when given a PEM certificate (chain) and its key; a client verifies the server
against a PEM CA bundle (or the system's CAs) and checks the host name, so an untrusted or mismatched
certificate is refused. Both images install this package, so the verifier, the operator and the edge
build their contexts the same way.

A server re-reads its certificate and key when the files change (:func:`keep_certificate_fresh`):
cert-manager renews a certificate long before it expires and the kubelet swaps the mounted Secret's
files, so a long-running verifier or operator serves the new one from its next handshake on, with
no restart.
"""

from __future__ import annotations

import asyncio
import logging
import os
import ssl
from pathlib import Path

log = logging.getLogger("edgespec.tls")


def server_context(cert_file: Path | None, key_file: Path | None) -> ssl.SSLContext | None:
    """The HTTPS context for a certificate and key (both or neither), or None for plain HTTP."""
    if cert_file is None and key_file is None:
        return None
    if cert_file is None or key_file is None:
        raise ValueError("TLS needs both a certificate file and a key file")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert_file, key_file)
    return context


def client_context(ca_file: Path | str | None) -> ssl.SSLContext:
    """Verifies the server's certificate against ``ca_file`` (None: the system's CAs) and its host."""
    context = ssl.create_default_context(cafile=str(ca_file) if ca_file is not None else None)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


class CertificateFiles:
    """A server context's certificate and key files; :meth:`reload_if_changed` loads them anew."""

    def __init__(self, context: ssl.SSLContext, cert_file: Path, key_file: Path) -> None:
        self.context, self.cert_file, self.key_file = context, cert_file, key_file
        self._stamp = self._read_stamp()

    def _read_stamp(self) -> tuple[int, int, int, int]:
        cert, key = os.stat(self.cert_file), os.stat(self.key_file)  # follows the kubelet's symlinks
        return (cert.st_mtime_ns, cert.st_size, key.st_mtime_ns, key.st_size)

    def reload_if_changed(self) -> bool:
        """Load the files into the context if they changed; a broken pair keeps the old one (logged)."""
        try:
            stamp = self._read_stamp()
            if stamp == self._stamp:
                return False
            # Tried on a scratch context first: a failed load_cert_chain has already replaced the
            # certificate of the context it ran on, which would then pair the new one with the old key.
            ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(self.cert_file, self.key_file)
            self.context.load_cert_chain(self.cert_file, self.key_file)  # new handshakes use it
        except (OSError, ssl.SSLError) as exc:  # half-written or mismatched: try again next time
            log.warning("keeping the current TLS certificate: cannot load %s: %s", self.cert_file, exc)
            return False
        self._stamp = stamp
        log.info("TLS certificate %s reloaded", self.cert_file)
        return True


async def keep_certificate_fresh(files: CertificateFiles, interval_s: float = 60.0) -> None:
    """Every ``interval_s`` seconds, reload the files if they changed (runs until cancelled)."""
    while True:
        await asyncio.sleep(interval_s)
        files.reload_if_changed()
