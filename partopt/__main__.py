"""``python -m partopt``: the command line, as the ``partopt`` script."""

from partopt.cli import main

raise SystemExit(main())
