"""Stands in for a corpus file's own mule scripts (`mule = py/mules/x.py`): it idles."""

import time

while True:
    time.sleep(60)
