"""Console entry point: `headrace ...` and `python -m headrace ...` hand argv to Rust."""

import sys

from headrace._headrace import run


def main() -> None:
    sys.exit(run(sys.argv))


if __name__ == "__main__":
    main()
