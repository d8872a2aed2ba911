"""`python -m cityedge` is the `cityedge` command."""

from cityedge.cli import main

raise SystemExit(main())
