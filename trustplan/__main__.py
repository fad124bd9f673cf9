"""`python -m trustplan` is the `trustplan` command."""

from trustplan.cli.app import main

raise SystemExit(main())
