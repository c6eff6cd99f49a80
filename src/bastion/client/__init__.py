"""The hub's Python SDK (``bastion.Client``) and the login settings the CLI shares."""

from bastion.client._client import Client
from bastion.client._login import Login, config_dir, login_path, resolve_login, save_login

__all__ = ["Client", "Login", "config_dir", "login_path", "resolve_login", "save_login"]
