"""``python -m AttriVAELib.cli COMMAND …`` (also the ``torchrun -m AttriVAELib.cli train …`` entry)."""

import sys

from AttriVAELib.cli.main import main

sys.exit(main())
