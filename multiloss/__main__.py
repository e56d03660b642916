"""``python -m multiloss``: the ``multiloss`` command line."""

import sys

from .cli.commands import main

sys.exit(main())
