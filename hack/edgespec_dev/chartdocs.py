"""Write (or check) the chart's README from its ``values.yaml`` with helm-docs.

helm-docs is built from its Go module like every other tool (``edgespec_dev.tools``); it reads the
``# -- description`` comment above each value and renders ``charts/edgespec/README.md.gotmpl``.
``python -m edgespec_dev.chartdocs`` writes the README; ``--check`` fails when it is stale.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from edgespec_dev import tools

REPO = Path(__file__).resolve().parents[2]
CHARTS = REPO / "charts"
README = CHARTS / "edgespec" / "README.md"


def render() -> str:
    """The README helm-docs makes from the chart as it is on disk."""
    result = subprocess.run(
        [
            str(tools.ensure("helm-docs")),
            "--chart-search-root",
            str(CHARTS),
            "--sort-values-order",
            "file",
            "--log-level",
            "warning",
            "--dry-run",
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    if result.returncode != 0 or "level=warning" in result.stderr or "level=error" in result.stderr:
        raise RuntimeError(f"helm-docs failed (exit {result.returncode}):\n{result.stderr}")
    return result.stdout


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m edgespec_dev.chartdocs",
        description="Write (or --check) charts/edgespec/README.md from values.yaml with helm-docs.",
    )
    parser.add_argument("--check", action="store_true", help="fail if the README differs from values.yaml")
    args = parser.parse_args(argv)
    try:
        text = render()
    except (RuntimeError, tools.ToolBuildError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    if args.check:
        if not README.exists() or README.read_text() != text:
            print(f"stale chart README: {README}; run: python -m edgespec_dev.chartdocs", file=sys.stderr)
            return 1
        return 0
    README.write_text(text)
    print(f"wrote {README}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
