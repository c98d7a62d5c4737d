"""Kept for tests/test_installer.py and tests/test_deploy.py until they import tests/servers.py."""

from pgdblink_safe._servers import Server

__all__ = ["Server"]
