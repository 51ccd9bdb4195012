"""The app every file of tests/ini_corpus/ is pointed at: a 200 for any path.

It answers under the callable names the corpus files use (`application`, `app`), so the
rewrite only has to change where the app is, not what it is called.
"""


def application(environ, start_response):
    body = b"corpus ok\n"
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


app = application
