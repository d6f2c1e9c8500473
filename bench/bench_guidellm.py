"""Load run with guidellm: the edge (speculative) server against a target-only OpenAI server.

    PYTHONPATH=operator:edge_image:verifier_image:hack \\
        python bench/bench_guidellm.py --keep /tmp/guidellm-run --write-docs docs/benchmarks.md

guidellm (PyPI, in its own venv: bench/guidellm_env.py) drives two servers on 127.0.0.1, one at a
time, with the same synthetic prompts (``--prompt-tokens`` in, ``--output-tokens`` out, greedy):

- **speculative**: ``edgespec-edge up`` (the verifier with the target and the edge draft server,
  ``--threads`` each); guidellm first checks that the edge answers ``GET /health``.
- **target only**: llama-cpp-python's own OpenAI server with the same target GGUF and ``--threads``
  threads, ``interrupt_requests`` off (else a new request interrupts the one streaming) and
  ``repeat_penalty`` 1.0 (its default 1.1 would change the text). It has no ``/health``, so guidellm's
  check is off for it.

Each server gets a synchronous run (one request at a time) and a run at concurrency 4, each ending
after ``--requests`` requests. guidellm builds its tokenizer offline from the target GGUF
(``load_kwargs: {gguf_file: ...}``, Hugging Face offline). Per run: median TTFT, inter-token latency
and request latency, output tokens/s over the run, requests done and failed. The machine's load is
recorded (load average, CPU used by other processes, steal), because this is a shared 2-core
machine: guidellm itself runs on the same cores as the servers. Writes JSON; ``--write-docs``
rewrites the guidellm section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

from bench_dataplane import cpu_seconds, free_port, log, wait_http
from edgespec_dev.drafts import ensure, target_path
from guidellm_env import GUIDELLM_VERSION
from guidellm_env import ensure as ensure_guidellm

MARK_BEGIN = "<!-- bench_guidellm:begin -->"
MARK_END = "<!-- bench_guidellm:end -->"
SERVED_NAME = "edgespec"


def _process_name(entry: Path, stat: str) -> str:
    """The executable's name, with the module of ``python -m``: never a whole command line (which may
    carry tokens or environments)."""
    words = (entry / "cmdline").read_bytes().split(b"\0")
    name = stat[stat.index("(") + 1 : stat.rindex(")")]
    if b"-m" in words[:-1]:
        name += " -m " + words[words.index(b"-m") + 1].decode(errors="replace")[:40]
    return name


class OthersSampler:
    """Samples every process's CPU time every ``every_s`` seconds in a thread, so processes that come
    and go during the run count too; this process and its descendants are left out."""

    def __init__(self, every_s: float = 2.0) -> None:
        self.every_s = every_s
        self._first: dict[int, float] = {}
        self._last: dict[int, tuple[str, float]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> None:
        ticks = os.sysconf("SC_CLK_TCK")
        parents: dict[int, int] = {}
        seen: dict[int, tuple[str, float]] = {}
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
                fields = stat[stat.rindex(")") + 2 :].split()
                seen[int(entry.name)] = (
                    _process_name(entry, stat),
                    (int(fields[11]) + int(fields[12])) / ticks,
                )
                parents[int(entry.name)] = int(fields[1])
            except (OSError, ValueError, IndexError):
                continue
        mine = os.getpid()
        for pid, (name, cpu) in seen.items():
            ancestor, hops = pid, 0
            while ancestor not in (0, 1, mine) and hops < 64:
                ancestor, hops = parents.get(ancestor, 0), hops + 1
            if ancestor == mine:
                continue
            self._first.setdefault(pid, cpu)
            self._last[pid] = (name, cpu)

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            self._sample()

    def start(self) -> None:
        self._sample()
        self._thread.start()

    def busiest(self, wall_s: float, limit: int = 6) -> list[dict[str, Any]]:
        """CPU seconds by process name over the run (a process first seen mid-run counts from then)."""
        self._stop.set()
        self._thread.join()
        self._sample()
        by_name: dict[str, float] = {}
        for pid, (name, cpu) in self._last.items():
            by_name[name] = by_name.get(name, 0.0) + cpu - self._first[pid]
        rows = sorted(by_name.items(), key=lambda item: -item[1])[:limit]
        return [{"name": n, "cpu_s": round(c, 1), "cores": round(c / wall_s, 3)} for n, c in rows if c > 0]


def scenario(args: argparse.Namespace, target: str, validate: bool, extras: dict[str, Any]) -> dict[str, Any]:
    gguf = target_path()
    return {
        "spec": {
            "backend": {
                "kind": "openai_http",
                "target": target,
                "model": SERVED_NAME,
                "request_format": "/v1/completions",
                "validate_backend": validate,
                "extras": {"body": extras},
                "timeout": 600,
            },
            "tokenizer": {
                "kind": "huggingface_auto",
                "model": str(gguf.parent),
                "load_kwargs": {"gguf_file": gguf.name},
            },
            "data": [
                {
                    "kind": "synthetic_text",
                    "prompt_tokens": args.prompt_tokens,
                    "output_tokens": args.output_tokens,
                }
            ],
            "constraints": [{"kind": "max_requests", "count": args.requests}],
        }
    }


def run_guidellm(
    bin_dir: Path, work: Path, name: str, spec: dict[str, Any], profile: dict[str, Any]
) -> dict[str, Any]:
    """One guidellm run; its JSON report, parsed."""
    spec = json.loads(json.dumps(spec))
    spec["spec"]["profile"] = profile
    report = work / f"{name}.json"
    spec["spec"]["outputs"] = [{"kind": "json", "path": str(report)}]
    config = work / f"{name}-scenario.json"
    config.write_text(json.dumps(spec, indent=2))
    env = {
        **{k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }
    log(f"guidellm {name}: {profile}")
    started = time.monotonic()
    result = subprocess.run(
        [str(bin_dir / "guidellm"), "run", "-c", str(config), "--disable-console-interactive"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    (work / f"{name}.log").write_text(result.stdout + result.stderr)
    if result.returncode != 0 or not report.exists():
        tail = (result.stdout + result.stderr)[-3000:]
        raise RuntimeError(f"guidellm {name} failed (exit {result.returncode}):\n{tail}")
    data: dict[str, Any] = json.loads(report.read_text())
    data["_wall_s"] = time.monotonic() - started
    return data


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def summarize(report: dict[str, Any]) -> dict[str, Any]:
    """Medians per request from guidellm's per-request records; tokens/s over the benchmark's span."""
    (benchmark,) = report["benchmarks"]
    requests = benchmark["requests"]
    done, failed = requests.get("successful", []), requests.get("errored", [])
    ttft = [r["time_to_first_token_ms"] for r in done if r.get("time_to_first_token_ms") is not None]
    itl = [r["inter_token_latency_ms"] for r in done if r.get("inter_token_latency_ms") is not None]
    latency = [r["request_latency"] for r in done if r.get("request_latency") is not None]
    output_tokens = sum(r.get("output_tokens") or 0 for r in done)
    starts = [r["request_start_time"] for r in done if r.get("request_start_time")]
    ends = [r["request_end_time"] for r in done if r.get("request_end_time")]
    span = (max(ends) - min(starts)) if starts and ends else None
    return {
        "requests_done": len(done),
        "requests_failed": len(failed),
        "first_error": (failed[0].get("info") or {}).get("error") if failed else None,
        "output_tokens": output_tokens,
        "output_tokens_mean": output_tokens / len(done) if done else None,
        "ttft_ms_median": _median(ttft),
        "itl_ms_median": _median(itl),
        "latency_s_median": _median(latency),
        "output_tokens_per_s": output_tokens / span if span else None,
        "span_s": span,
        "guidellm_duration_s": benchmark.get("duration"),
    }


def get_status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as err:
        return int(err.code)
    except OSError:
        return 0


def stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def bench(args: argparse.Namespace, bin_dir: Path, work: Path) -> dict[str, Any]:
    target, draft = target_path(), ensure(args.draft)
    profiles = {
        "synchronous": {"kind": "synchronous"},
        "concurrency 4": {"kind": "concurrent", "streams": [4]},
    }
    out: dict[str, Any] = {"servers": {}}

    port = free_port()
    edge = subprocess.Popen(
        [sys.executable, "-m", "edgespec_edge", "up", "--target", str(target), "--draft", str(draft),
         "--port", str(port), "--k", str(args.k), "--n-threads", str(args.threads),
         "--served-model-name", SERVED_NAME],
        stdout=(work / "edge-up.log").open("w"), stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        wait_http(f"http://127.0.0.1:{port}/readyz", timeout_s=300)
        health = get_status(f"http://127.0.0.1:{port}/health")
        runs = {}
        for label, profile in profiles.items():
            spec = scenario(args, f"http://127.0.0.1:{port}", True, {"temperature": 0})
            report = run_guidellm(bin_dir, work, f"speculative-{label.replace(' ', '')}", spec, profile)
            runs[label] = summarize(report)
        out["servers"]["speculative"] = {"health_status": health, "k": args.k, "runs": runs}
    finally:
        stop(edge)

    port = free_port()
    baseline = subprocess.Popen(
        [str(bin_dir / "python"), "-m", "llama_cpp.server", "--model", str(target), "--model_alias",
         SERVED_NAME, "--host", "127.0.0.1", "--port", str(port), "--n_threads", str(args.threads),
         "--n_ctx", "2048", "--interrupt_requests", "False", "--verbose", "False"],
        stdout=(work / "llama-server.log").open("w"), stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        wait_http(f"http://127.0.0.1:{port}/v1/models", timeout_s=300)
        health = get_status(f"http://127.0.0.1:{port}/health")
        runs = {}
        for label, profile in profiles.items():
            extras = {"temperature": 0, "repeat_penalty": 1.0}
            spec = scenario(args, f"http://127.0.0.1:{port}", False, extras)
            report = run_guidellm(bin_dir, work, f"target-{label.replace(' ', '')}", spec, profile)
            runs[label] = summarize(report)
        out["servers"]["target only"] = {"health_status": health, "runs": runs}
    finally:
        stop(baseline)
    return out


def markdown(result: dict[str, Any]) -> str:
    rows = [
        "| server | load | done / failed | output tokens (mean) | TTFT median, ms | ITL median, ms | "
        "latency median, s | output tokens/s |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]

    def fmt(value: Any, digits: int = 0) -> str:
        return "n/a" if value is None else f"{value:.{digits}f}"

    for server, data in result["servers"].items():
        for label, run in data["runs"].items():
            rows.append(
                f"| {server} | {label} | {run['requests_done']} / {run['requests_failed']} | "
                f"{fmt(run['output_tokens_mean'], 1)} | {fmt(run['ttft_ms_median'])} | "
                f"{fmt(run['itl_ms_median'], 1)} | {fmt(run['latency_s_median'], 2)} | "
                f"{fmt(run['output_tokens_per_s'], 1)} |"
            )
    return "\n".join(rows)


def docs_section(result: dict[str, Any]) -> str:
    machine, params = result["machine"], result["params"]
    spec, base = result["servers"]["speculative"]["runs"], result["servers"]["target only"]["runs"]
    ratios = []
    for label in spec:
        a, b = spec[label]["output_tokens_per_s"], base[label]["output_tokens_per_s"]
        if a and b:
            ratios.append(f"{a / b:.2f}x {'synchronously' if label == 'synchronous' else 'at ' + label}")
    busiest = [p for p in machine.get("busiest_others", []) if p.get("name") and p["cores"] >= 0.05][:4]
    others = "; busiest by CPU: " + ", ".join(f"`{p['name']}` {p['cores']:.2f} cores" for p in busiest)
    return "\n".join(
        [
            MARK_BEGIN,
            "## Load run with guidellm: speculative edge against a target-only server",
            "",
            f"Measured **once, on a shared and loaded 2-core machine** (other engineers' builds and tests "
            f"ran beside it: load average {machine['load_start'][0]:.1f} at the start and "
            f"{machine['load_end'][0]:.1f} at the end, other processes used {machine['others_cores']:.2f} "
            f"cores on average over the run's {machine['wall_s']:.0f} s, steal {machine['steal_s']:.0f} s"
            f"{others if busiest else ''}). guidellm {params['guidellm']} ran on the same "
            f"two cores as the servers. Treat the numbers as indicative, not as a measurement of the design.",
            "",
            f"guidellm, synthetic prompts of {params['prompt_tokens']} tokens asking for "
            f"{params['output_tokens']} (guidellm sends `ignore_eos`), greedy, `/v1/completions` streamed, "
            f"{params['requests']} requests per run; tokenizer built offline from the target GGUF. "
            f"Speculative: `edgespec-edge up` (draft {params['draft']}, K = {params['k']}, "
            f"{params['threads']} thread(s) each for draft and verifier); target only: llama-cpp-python's "
            f"OpenAI server, {params['threads']} thread(s), `interrupt_requests` off, `repeat_penalty` 1.0. "
            f"The edge answered `GET /health` with "
            f"{result['servers']['speculative']['health_status']} (guidellm's check was on for it).",
            "",
            markdown(result),
            "",
            f"Speculative over target only, output tokens/s: {', '.join(ratios) or 'n/a'}. "
            "TTFT and ITL are per request (medians); output tokens/s is all output tokens over the run's "
            "span. Command: `" + result["command"] + "`; raw numbers in its JSON.",
            "",
            "Reading it: the speculative side runs two models of the same size class (draft and target, one "
            "thread each) where the baseline runs one, so on this CPU it cannot win (see the baselines "
            "above); the point of the run is that the edge serves a standard load generator's traffic "
            "unchanged (health check, `ignore_eos`, streamed usage) with no failed request. At "
            "concurrency 4 llama-cpp-python's server answers one request at a time, so its TTFT is queueing; "
            "the edge drafts up to 4 requests at once (`EDGESPEC_EDGE_MAX_CONCURRENT`), so its TTFT is "
            "shorter and its inter-token latency longer.",
            "",
            MARK_END,
        ]
    )


def write_docs(path: Path, section: str) -> None:
    text = path.read_text()
    if MARK_BEGIN in text:
        head, rest = text.split(MARK_BEGIN, 1)
        _, tail = rest.split(MARK_END, 1)
        text = head + section + tail
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    path.write_text(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prompt-tokens", type=int, default=64)
    parser.add_argument("--output-tokens", type=int, default=64)
    parser.add_argument("--requests", type=int, default=12, help="requests per run (each run ends there)")
    parser.add_argument("--threads", type=int, default=1, help="threads of each model")
    parser.add_argument("--k", type=int, default=4, help="speculative length K")
    parser.add_argument("--draft", default="gemma3-270m-b16", help="draft catalog name")
    parser.add_argument("--out", type=Path, default=Path("bench_guidellm.json"))
    parser.add_argument("--keep", type=Path, help="keep guidellm's reports, scenarios and logs here")
    parser.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    parser.add_argument(
        "--write-docs", type=Path, metavar="MD", help="rewrite the guidellm section of this Markdown file"
    )
    parser.add_argument(
        "--from-json", type=Path, metavar="JSON", help="no run: print or write the docs from this result"
    )
    args = parser.parse_args()
    if args.from_json is not None:
        report(json.loads(args.from_json.read_text()), args)
        return
    bin_dir = ensure_guidellm()
    work = Path(tempfile.mkdtemp(prefix="bench-guidellm-"))
    load_start, started = os.getloadavg(), time.monotonic()
    busy_start, steal_start, own_start = cpu_seconds()
    sampler = OthersSampler()
    sampler.start()
    try:
        result = bench(args, bin_dir, work)
    finally:
        if args.keep is not None:
            shutil.copytree(work, args.keep, dirs_exist_ok=True)
        shutil.rmtree(work, ignore_errors=True)
    busy, steal, own = cpu_seconds()  # servers and guidellm are reaped children by now: counted as ours
    wall_s = time.monotonic() - started
    others = max(0.0, (busy - busy_start) - (own - own_start))
    result["command"] = "python bench/bench_guidellm.py " + " ".join(sys.argv[1:])
    result["params"] = {
        "guidellm": GUIDELLM_VERSION,
        "prompt_tokens": args.prompt_tokens,
        "output_tokens": args.output_tokens,
        "requests": args.requests,
        "threads": args.threads,
        "k": args.k,
        "draft": args.draft,
    }
    result["machine"] = {
        "cpus": os.cpu_count(),
        "wall_s": wall_s,
        "others_cpu_s": others,
        "others_cores": others / wall_s,
        "steal_s": steal - steal_start,
        "load_start": load_start,
        "load_end": os.getloadavg(),
        "busiest_others": sampler.busiest(wall_s),
        "when_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    args.out.write_text(json.dumps(result, indent=2))
    log(f"wrote {args.out}; machine {result['machine']['others_cores']:.2f} other cores")
    report(result, args)


def report(result: dict[str, Any], args: argparse.Namespace) -> None:
    if args.markdown:
        print(markdown(result))
    if args.write_docs:
        write_docs(args.write_docs, docs_section(result))
        log(f"rewrote the guidellm section of {args.write_docs}")


if __name__ == "__main__":
    main()
