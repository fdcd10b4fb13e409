"""``python -m tocsin.app.demo`` (what ``make demo`` runs) is ``tocsin demo``."""

import sys

from tocsin.app.demo import main

sys.exit(main())
