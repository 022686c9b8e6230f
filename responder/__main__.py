"""``python -m responder``: the `responder` command (`responder.cli`), from a checkout or a
host where the console script is not on PATH."""

import sys

from responder.cli import main

sys.exit(main())
