"""A single-file Django project: one view that renders a template (scenario django).

No database, DEBUG off (so the cached template loader is on), and only CommonMiddleware, which
`startproject` also enables: it sets Content-Length (without it, servers that cannot chunk a
response must close the connection to end it, and the benchmark would measure reconnects).
"""

import os

import django
from django.conf import settings
from django.core.wsgi import get_wsgi_application
from django.shortcuts import render
from django.urls import re_path

HERE = os.path.dirname(os.path.abspath(__file__))

settings.configure(
    DEBUG=False,
    SECRET_KEY="bench-only-not-secret",
    ALLOWED_HOSTS=["*"],
    ROOT_URLCONF=__name__,
    MIDDLEWARE=["django.middleware.common.CommonMiddleware"],
    INSTALLED_APPS=[],
    USE_TZ=True,
    TEMPLATES=[
        {
            "BACKEND": "django.template.backends.django.DjangoTemplates",
            "DIRS": [os.path.join(HERE, "templates")],
        }
    ],
)

ROWS = [{"id": i, "name": f"row {i}", "price": i * 1.25} for i in range(20)]


def page(request, path=""):
    return render(request, "page.html", {"title": "headrace bench", "rows": ROWS})


urlpatterns = [re_path(r"^(?P<path>.*)$", page)]

django.setup()
application = get_wsgi_application()
