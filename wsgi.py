"""WSGI entry point: ``gunicorn wsgi:app``."""

from resize_server.http import create_app

app = create_app()
