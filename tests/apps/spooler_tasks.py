"""A `--spooler-import` module: with --lazy-apps the spooler loads the app itself; this module
only shows that the import happened once, in the spooler."""

import uwsgi

print("spooler_tasks imported, in the spooler:", bool(uwsgi.i_am_the_spooler()), flush=True)
