"""``python -m knflow`` is the ``knflow`` command."""

from knflow.cli import main

raise SystemExit(main())
