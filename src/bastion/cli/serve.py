"""``bastion serve``: run the hub (TLS by default; the first start creates an admin key)."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from datetime import UTC, datetime
from pathlib import Path

__all__ = ["add_parser", "run"]


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "serve",
        help="run the model hub",
        description="Serves the hub over HTTPS with a generated CA (DATA/tls/ca.crt) unless "
        "--tls-cert/--tls-key are given. On first start an admin API key is created: printed "
        "once, or written to --admin-token-file (mode 0600) and not printed.",
    )
    p.add_argument(
        "--data-dir", type=Path, help="data folder (default .bastion, or BASTION_DATA_DIR)"
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8443)
    p.add_argument("--database-url", help="postgresql+psycopg://... (default: SQLite in DATA)")
    p.add_argument("--admin-token-file", type=Path, help="write the bootstrap admin token here")
    p.add_argument("--tls-cert", type=Path, help="your own server certificate (PEM)")
    p.add_argument("--tls-key", type=Path, help="its private key (PEM)")
    p.add_argument(
        "--insecure-http", action="store_true", help="plain HTTP, loopback development only"
    )
    p.add_argument(
        "--access-config",
        type=Path,
        help="TOML: rate limits, OIDC issuers, client certificates, sessions, CORS "
        "(docs/access.md)",
    )
    p.set_defaults(run=run)


class _JsonLines(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        body = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat().replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            body["exception"] = self.formatException(record.exc_info)
        return json.dumps(body)


def run(args: argparse.Namespace) -> int:
    from bastion.api._server import serve
    from bastion.api._settings import ServerSettings

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_JsonLines())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if args.verbose else logging.INFO)
    if not args.verbose:  # the migration tool narrates every plugin it loads at start
        logging.getLogger("alembic").setLevel(logging.WARNING)
    settings = ServerSettings.from_env(
        data_dir=args.data_dir,
        host=args.host,
        port=args.port,
        database_url=args.database_url,
        admin_token_file=args.admin_token_file,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        insecure_http=args.insecure_http or None,
        access_config=args.access_config,
    )
    serve(settings)
    return 0
