"""``python -m relay_client``: the command line (see :mod:`relay_client.cli`)."""

import sys

from .cli import main

sys.exit(main())
