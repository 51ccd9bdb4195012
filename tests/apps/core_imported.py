"""Imported by `--import`: records which process imported it (the master when the app is
preloaded, each worker with --lazy-apps)."""

import os

IMPORTED_IN = os.getpid()
