"""``python -m multiloss``: the ``multiloss`` command line."""

import sys

from .cli import main

sys.exit(main())
