# `--mount /PATH=APP` (built by headrace once, when the apps are loaded): one WSGI callable that
# hands each request to the app of its mountpoint, as uWSGI does. With --manage-script-name the
# longest mountpoint that starts PATH_INFO wins and moves to SCRIPT_NAME; without it the
# request's SCRIPT_NAME (as nginx sends it) names the app. The app mounted at '' is the default;
# without one, the first app mounted is, as in uWSGI 2.0 (its pyloader.c makes the first app
# whose mountpoint starts with '/' the default app).
def make(apps, manage):
    table = sorted(apps, key=lambda pair: -len(pair[0]))
    by_name = dict(table)
    default = by_name.get("", apps[0][1] if apps else None)

    def not_found(environ, start_response):
        body = b"no app is mounted here\n"
        start_response("404 Not Found", [("Content-Type", "text/plain"),
                                         ("Content-Length", str(len(body)))])
        return [body]

    if manage:
        def dispatch(environ, start_response):
            path = environ.get("PATH_INFO", "")
            for point, app in table:
                if point and (path == point or path.startswith(point + "/")):
                    environ["SCRIPT_NAME"] = environ.get("SCRIPT_NAME", "").rstrip("/") + point
                    environ["PATH_INFO"] = path[len(point):]
                    return app(environ, start_response)
            return (default or not_found)(environ, start_response)
    else:
        def dispatch(environ, start_response):
            app = by_name.get(environ.get("SCRIPT_NAME", "").rstrip("/"), default)
            return (app or not_found)(environ, start_response)
    return dispatch
