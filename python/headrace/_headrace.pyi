__version__: str

def run(argv: list[str]) -> int:
    """Parse uWSGI-style arguments, start the master and serve until stopped; returns the exit code."""
