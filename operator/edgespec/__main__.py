"""``python -m edgespec``: the same as the ``edgespec`` console script."""

from edgespec.cli import main

raise SystemExit(main())
