"""No `application`: the module's `applications` maps mountpoints to ASGI apps (a callable, or
a "module:callable" string), as uWSGI's `uwsgi.applications` does for WSGI."""

from asgi_mount import main

applications = {"": main, "/alpha": "asgi_mount:alpha"}
