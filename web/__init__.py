"""The web app and JSON API."""

from web.app import create_app

__all__ = ["create_app"]
