"""TLS contexts for the edge-to-cloud links (verifier, operator telemetry): stdlib ``ssl`` only.

A server serves HTTPS when given a PEM certificate (chain) and its key; a client verifies the server
against a PEM CA bundle (or the system's CAs) and checks the host name, so an untrusted or mismatched
certificate is refused. Both images install this package, so the verifier, the operator and the edge
build their contexts the same way.
"""

from __future__ import annotations

import ssl
from pathlib import Path


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
