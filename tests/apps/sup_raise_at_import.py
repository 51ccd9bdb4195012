"""Raises at import: with --lazy-apps every new worker fails to load the app."""

raise RuntimeError("sup-raise-at-import: this module cannot be imported")
