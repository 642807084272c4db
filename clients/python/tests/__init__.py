"""Tests of the Python relay client; run ``python3 -m unittest discover`` in clients/python."""

import faulthandler
import sys

#: A suite that hangs prints every thread's stack and exits instead of waiting for the CI's kill
#: (the whole suite takes well under a minute; tests/python/python_test.ts stops it at 180 s).
HANG_DUMP_S = 150

faulthandler.dump_traceback_later(HANG_DUMP_S, exit=True, file=sys.stderr)
