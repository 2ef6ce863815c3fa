"""`python -m actionproxy` is the same as the `actionproxy` command."""

from actionproxy.cli import main

raise SystemExit(main())
