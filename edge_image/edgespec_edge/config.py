"""Edge draft-server settings and the speculative length K read live from a mounted file.

Settings come from ``EDGESPEC_EDGE_*`` environment variables (or arguments). K lives apart from them in
a small file the operator mounts from a ConfigMap, so the operator can change K without restarting the
pod: ``SpeculativeLength.current()`` stats the file on every round (one syscall) and re-reads it when
its modification time or size changed. Kubernetes swaps ConfigMap volumes by symlink, which the stat
follows. The file holds YAML: ``k: 4`` (or ``speculativeLength: 4``, or a bare integer). A file that
cannot be read or parsed keeps the last good K and logs why, so a bad edit never stops serving.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

log = logging.getLogger("edgespec.edge")

K_MIN, K_MAX = 1, 64


class EdgeSettings(BaseSettings):
    """Draft server configuration (``EDGESPEC_EDGE_<NAME>``)."""

    model_config = SettingsConfigDict(env_prefix="EDGESPEC_EDGE_", extra="ignore")

    mode: Literal["speculative", "cloud-only"] = Field(
        default="speculative",
        description="speculative: draft here, verify in the cloud; cloud-only: no draft model, the "
        "verifier generates every token and this server streams it (where speculation does not pay).",
    )
    draft_model: Path = Field(
        default=Path("draft.gguf"), description="Draft GGUF file (unused in cloud-only mode)."
    )
    served_model_name: str = Field(default="edgespec", description="Model name reported to clients.")
    verifier_url: str = Field(default="http://127.0.0.1:8000", description="Base URL of the verifier.")
    verifier_token_file: Path | None = Field(default=None, description="File with the verifier's token.")
    verifier_token: SecretStr | None = Field(default=None, description="Verifier token, if no file.")
    k: int = Field(default=4, ge=K_MIN, le=K_MAX, description="K when no K file is configured.")
    k_file: Path | None = Field(default=None, description="YAML file with the live K (a ConfigMap).")
    host: str = Field(default="0.0.0.0")
    port: int = Field(default=8080, ge=1, le=65535)
    n_threads: int = Field(default=2, ge=1, le=256, description="Draft model CPU threads.")
    n_ctx: int = Field(default=2048, ge=64, le=131072, description="Context window, tokens.")
    max_concurrent: int = Field(default=4, ge=1, le=256, description="Requests drafting at once.")
    max_queue: int = Field(
        default=8, ge=0, le=4096, description="Requests waiting for a slot; beyond: 429 at once."
    )
    default_max_tokens: int = Field(default=128, ge=1, le=32768)
    default_temperature: float = Field(default=0.0, ge=0.0, le=10.0, description="0 = greedy.")
    draft_top_n: int = Field(
        default=32, ge=1, le=4096, description="Support of the draft distribution sent when sampling."
    )
    verify_timeout_s: float = Field(
        default=15.0, gt=0.0, description="Deadline of one verify call, retries included."
    )
    retry_budget_s: float = Field(
        default=5.0,
        ge=0.0,
        description="How long to keep retrying an unreachable verifier per round (within the deadline).",
    )
    ca_file: Path | None = Field(
        default=None,
        description="PEM CA bundle the cloud's HTTPS certificates (verifier, operator) must chain to.",
    )

    def verifier_token_value(self) -> str | None:
        if self.verifier_token_file is not None:
            return self.verifier_token_file.read_text(encoding="utf-8").strip()
        return self.verifier_token.get_secret_value() if self.verifier_token else None


def parse_k(text: str) -> int:
    """K from the file's text: ``k: N``, ``speculativeLength: N`` or ``N``."""
    data: Any = yaml.safe_load(text)
    if isinstance(data, dict):
        data = data.get("k", data.get("speculativeLength"))
    if isinstance(data, bool) or not isinstance(data, int):
        raise ValueError("expected 'k: <integer>'")
    if not K_MIN <= data <= K_MAX:
        raise ValueError(f"k={data} outside {K_MIN}..{K_MAX}")
    return data


class SpeculativeLength:
    """The live K: fixed, or from a file re-read whenever it changes."""

    def __init__(self, default: int, path: Path | None = None) -> None:
        self._value = default
        self._path = path
        self._stamp: tuple[int, int] | None = None
        self._problem: str | None = None
        self.reloads = 0

    def current(self) -> int:
        if self._path is None:
            return self._value
        try:
            stat = os.stat(self._path)
            stamp = (stat.st_mtime_ns, stat.st_size)
            if stamp != self._stamp:
                self._stamp = stamp
                value = parse_k(self._path.read_text(encoding="utf-8"))
                if value != self._value:
                    log.info(
                        "speculative length K changed %d -> %d (from %s)", self._value, value, self._path
                    )
                self._value = value
                self.reloads += 1
            self._problem = None
        except (OSError, ValueError, yaml.YAMLError) as exc:
            problem = f"{type(exc).__name__}: {exc}"
            if problem != self._problem:  # once per distinct problem, not every round
                log.warning("keeping K=%d: cannot use %s: %s", self._value, self._path, problem)
                self._problem = problem
        return self._value
