"""App for tests/test_routing.py: answers 200 with a header the rules may delete, and the
request variables a rule may have set (`addvar`) or that the test asks for."""


def application(environ, start_response):
    body = f"app {environ.get('PATH_INFO')} var={environ.get('ROUTED_VAR', '-')}".encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("X-Drop", "yes"),
                              ("Content-Length", str(len(body)))])
    return [body]
