"""Settings of the test project: no database, no middleware beyond what the views need, and
the `django.request` logger to stderr so a view's traceback reaches headrace's log."""

DEBUG = False
SECRET_KEY = "headrace-asgi-tests-not-secret-" + "y" * 40
ROOT_URLCONF = "djasgi.urls"
ALLOWED_HOSTS = ["*"]
MIDDLEWARE: list[str] = []
INSTALLED_APPS: list[str] = []
DATABASES: dict = {}
USE_TZ = True
DATA_UPLOAD_MAX_MEMORY_SIZE = None

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"stderr": {"class": "logging.StreamHandler"}},
    "loggers": {"django.request": {"handlers": ["stderr"], "level": "ERROR", "propagate": False}},
}
