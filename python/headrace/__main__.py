"""Console entry point: `headrace ...` and `python -m headrace ...` hand argv to Rust;
`headrace top ADDR` is the stats client (headrace.top), which needs no server."""

import sys


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "top":
        from headrace.top import main as top

        sys.exit(top(sys.argv[2:]))
    from headrace._headrace import run

    sys.exit(run(sys.argv))


if __name__ == "__main__":
    main()
