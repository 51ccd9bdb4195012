"""Send 20 requests at once to the seed app and print when each one returns.

    python examples/seed_client.py [--url http://127.0.0.1:8000] [--requests 20]

Standard library only, so it runs from any Python 3.9+. Exits 1 if any request fails.
"""

import argparse
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor, as_completed


def fetch(url, index, start, timeout):
    with urllib.request.urlopen(f"{url}/?param=Request_{index}", timeout=timeout) as resp:
        body = resp.read().decode("utf-8", "replace")
        return index, resp.status, body, time.monotonic() - start


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000", help="the server's base URL")
    parser.add_argument("--requests", "-n", type=int, default=20, help="how many requests")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds per request")
    args = parser.parse_args(argv)
    url = args.url.rstrip("/")

    print(f"sending {args.requests} requests to {url}", flush=True)
    start = time.monotonic()
    failures = 0
    with ThreadPoolExecutor(max_workers=args.requests) as pool:
        futures = {
            pool.submit(fetch, url, i, start, args.timeout): i for i in range(args.requests)
        }
        for future in as_completed(futures):
            i = futures[future]
            try:
                _, status, body, elapsed = future.result()
            except Exception as e:  # noqa: BLE001 - report every failure, keep going
                failures += 1
                elapsed = time.monotonic() - start
                print(f"Request_{i} failed after {elapsed:.2f} s: {e}", flush=True)
                continue
            print(f"Request_{i} returned {status} {body!r} after {elapsed:.2f} s", flush=True)
    total = time.monotonic() - start
    print(f"{args.requests - failures} of {args.requests} requests done in {total:.2f} s")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
