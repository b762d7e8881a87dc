"""Settings of the Django example (``DJANGO_SETTINGS_MODULE=django_settings``), as a project's settings.py."""

DEBUG = False
ALLOWED_HOSTS = ["*"]
ROOT_URLCONF = "django_app"
SECRET_KEY = "example-only-not-a-secret"
