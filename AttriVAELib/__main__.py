"""``python -m AttriVAELib COMMAND …``: the ``attrivae`` command line."""

import sys

from AttriVAELib.cli.main import main

sys.exit(main())
