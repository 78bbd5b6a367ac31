"""``python -m partopt.cli``: the command line, as the ``partopt`` script."""

from partopt.cli.main import main

raise SystemExit(main())
