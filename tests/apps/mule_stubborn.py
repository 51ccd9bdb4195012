"""A `--mule=mule_stubborn.py` that ignores SIGTERM: only `--mule-reload-mercy` stops it."""

import os
import signal
import time

signal.signal(signal.SIGTERM, signal.SIG_IGN)
with open(os.path.join(os.environ["HR_RECORD"], f"stubborn-{os.getpid()}"), "w") as f:
    f.write("started")
while True:
    time.sleep(1)
