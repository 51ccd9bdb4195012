"""The benchmark harness behind `bench/run` (bench/bench.py is its entry point).

One module a job:
- common: where things are, which core does what, logging, RunError
- procs: running external commands with a timeout; stopping a process tree by PID
- prepare: the Setup of a run: tools, bench/.venv with the peers, the ceiling server, headrace
- servers: the apps and the server table, and how each server is started
- launch: starting a server (and nginx in front of it), waiting for its first 200, stopping it
- load: the clients: wrk, bench/wsload (WebSocket echo), the saturation client, the stats
  scraper, memory of a process tree
- records: the typed result records (one run, one scenario's summary) as the JSON keeps them
- scenarios: the scenario table and one run of a scenario for a server
- report: the results files, bench/results/<date>.md and .json
- cli: the options of `bench/run` and the interleaved rounds
"""
