"""``python -m tocsin.demo`` (what ``make demo`` runs) is ``tocsin demo``."""

import sys

from tocsin.demo import main

sys.exit(main())
