"""An app that fails to import: headrace must print the traceback and exit 1."""

raise RuntimeError("broken-app-marker: this module cannot be imported")
