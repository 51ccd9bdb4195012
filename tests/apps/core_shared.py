"""Imported by `--shared-import`: always in the master, before any fork."""

import os

IMPORTED_IN = os.getpid()
