# `--py-autoreload N` (run by headrace in each worker, with the app loaded): every N seconds,
# compare the mtimes of every imported module's file with what was first seen; on a change, ask
# the master for a graceful reload with SIGHUP, as uWSGI's python auto-reloader does.
def start(interval, ignore, master):
    import os
    import signal
    import sys
    import threading
    import time

    def mtimes():
        out = {}
        for name, mod in list(sys.modules.items()):
            if name in ignore:
                continue
            path = getattr(mod, "__file__", None)
            if not isinstance(path, str):
                continue
            if path.endswith((".pyc", ".pyo", ".pyd")):
                path = path[:-1]
            try:
                out[path] = os.stat(path).st_mtime
            except OSError:
                pass
        return out

    seen = mtimes()

    def watch():
        while True:
            time.sleep(interval)
            for path, mtime in mtimes().items():
                if seen.setdefault(path, mtime) != mtime:
                    print(f"[headrace-python-reloader] module/file {path} has been modified",
                          flush=True)
                    os.kill(master, signal.SIGHUP)
                    return

    threading.Thread(target=watch, name="headraceAutoReloader", daemon=True).start()
