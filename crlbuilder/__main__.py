"""``python -m crlbuilder``: the `crlbuilder` command (`crlbuilder.cli`), from a checkout or
a host where the console script is not on PATH."""

import sys

from crlbuilder.cli import main

sys.exit(main())
