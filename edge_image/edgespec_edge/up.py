"""``edgespec-edge up``: the whole data plane on loopback in one command.

Starts a verifier (the target model) and an edge draft server (a draft model) as two child processes
on 127.0.0.1 with a fresh random bearer token between them, waits until both answer ``/readyz``, prints
the URL and an ``openai`` SDK snippet, and stops both cleanly on Ctrl-C or SIGTERM. The models default
to the project's test models (Gemma 3 270M from PyPI and a draft derived from it); any catalog name,
``file://`` path or GGUF path works.
"""

from __future__ import annotations

import argparse
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import FrameType

from edgespec_edge.models import builtin_catalog, resolve

SNIPPET = """\
from openai import OpenAI

client = OpenAI(base_url="{url}/v1", api_key="unused")
completion = client.completions.create(model="{model}", prompt="The capital of France is", max_tokens=16)
print(completion.choices[0].text)
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--target", default="gemma3-270m", help="target: catalog name, source or GGUF path")
    parser.add_argument("--draft", default="gemma3-270m-b16", help="draft: catalog name, source or GGUF path")
    parser.add_argument("--port", type=int, default=8080, help="edge port on 127.0.0.1 (0: any free port)")
    parser.add_argument("--verifier-port", type=int, default=0, help="verifier port (0: any free port)")
    parser.add_argument("--k", type=int, default=4, help="speculative length K")
    parser.add_argument("--n-threads", type=int, default=1, help="CPU threads of each model")
    parser.add_argument("--served-model-name", default="edgespec")
    parser.add_argument("--ready-timeout", type=float, default=300.0, help="seconds to wait for both")


def model_file(name: str) -> Path:
    """A GGUF path for a catalog name, source or path; the test drafts are derived when missing."""
    if Path(name).is_file():
        return Path(name)
    if ":" not in name and name != "gemma3-270m":
        try:  # in a development checkout: derive the test draft from the target if needed
            from edgespec_dev.drafts import RECIPES, ensure

            if name in RECIPES:
                return ensure(name)
        except ImportError:
            pass
    return resolve(name, catalog=builtin_catalog(), progress=lambda m: print(m, file=sys.stderr))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_ready(url: str, processes: list[Child], timeout_s: float) -> None:
    for _ in range(int(timeout_s / 0.25)):
        for process in processes:
            if process.poll() is not None:
                raise RuntimeError(f"{process.name} exited with code {process.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/readyz", timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.25)
    raise RuntimeError(f"{url} not ready after {timeout_s:.0f} s")


def _child(module: str, args: list[object], threads: int, env: dict[str, str]) -> Child:
    """``python -m module args`` on 127.0.0.1, named for messages by its module."""
    command = [
        sys.executable,
        "-m",
        module,
        *map(str, args),
        "--host",
        "127.0.0.1",
        "--n-threads",
        str(threads),
    ]
    return Child(command, env=env, name=module)


class Child(subprocess.Popen[bytes]):
    def __init__(self, command: list[str], *, env: dict[str, str], name: str) -> None:
        super().__init__(command, env=env)
        self.name = name


def stop(processes: list[Child]) -> None:
    for process in processes:
        if process.poll() is None:
            process.terminate()
    for process in processes:
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def run(args: argparse.Namespace) -> int:
    try:
        target, draft = model_file(args.target), model_file(args.draft)
    except (OSError, KeyError, ValueError) as exc:
        print(f"edgespec-edge up: {exc}", file=sys.stderr)
        return 2
    edge_port = args.port or free_port()
    verifier_port = args.verifier_port or free_port()
    verifier_url = f"http://127.0.0.1:{verifier_port}"
    edge_url = f"http://127.0.0.1:{edge_port}"
    stopping: list[int] = []

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stopping.append(signum)
        raise KeyboardInterrupt

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    processes: list[Child] = []
    with tempfile.TemporaryDirectory(prefix="edgespec-up-") as workdir:
        token_file = Path(workdir) / "token"
        token_file.write_text(secrets.token_urlsafe(24))
        token_file.chmod(0o600)
        env = {k: v for k, v in os.environ.items() if not k.startswith("EDGESPEC_")}
        threads = args.n_threads
        try:
            verifier = ["--model", target, "--port", verifier_port, "--token-file", token_file]
            processes.append(_child("edgespec_verifier", verifier, threads, env))
            edge = ["serve", "--draft-model", draft, "--port", edge_port, "--verifier-url", verifier_url,
                    "--verifier-token-file", token_file, "--k", args.k]  # fmt: skip
            edge_env = {**env, "EDGESPEC_EDGE_SERVED_MODEL_NAME": args.served_model_name}
            processes.append(_child("edgespec_edge", edge, threads, edge_env))
            wait_ready(verifier_url, processes, args.ready_timeout)
            wait_ready(edge_url, processes, args.ready_timeout)
            print(f"edgespec data plane up: {edge_url}/v1 (model {args.served_model_name!r})", flush=True)
            print(f"  verifier {verifier_url} (target {target})", flush=True)
            print(f"  draft {draft}, K={args.k}; Ctrl-C stops both\n", flush=True)
            print(SNIPPET.format(url=edge_url, model=args.served_model_name), flush=True)
            while all(process.poll() is None for process in processes):
                time.sleep(0.5)
            failed = [p for p in processes if p.poll() is not None]
            print(
                f"edgespec-edge up: {failed[0].name} exited ({failed[0].returncode}); stopping",
                file=sys.stderr,
            )
            return 1
        except KeyboardInterrupt:
            print("edgespec-edge up: stopping", file=sys.stderr, flush=True)
            return 0
        except RuntimeError as exc:
            print(f"edgespec-edge up: {exc}", file=sys.stderr)
            return 1
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            stop(processes)
