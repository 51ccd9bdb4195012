"""headrace: a Python application server with uWSGI's words and a Rust core."""

from headrace._headrace import __version__

__all__ = ["__version__"]
