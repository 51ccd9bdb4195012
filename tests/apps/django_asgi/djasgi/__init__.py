"""A minimal Django project served as ASGI by tests/test_asgi_compliance.py:
`--pythonpath tests/apps/django_asgi --module djasgi.asgi:application`."""
