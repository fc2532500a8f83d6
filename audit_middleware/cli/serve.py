"""``audit-middleware serve``: the web viewer on its own (uvicorn), behind one token.

The token comes from ``$AUDIT_VIEWER_TOKEN`` or ``--token-file``; without one the command refuses
to start (exit 2). It binds 127.0.0.1 unless ``--host`` says otherwise. Sign-in events go to the
audit table through a separate, INSERT-capable DSN (``--audit-dsn`` or ``$AUDIT_VIEWER_AUDIT_DSN``)
when one is given: the viewer's own DSN may (and should) be a SELECT-only role. Without it they are
only logged.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import os
import stat
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import ConfigurationError
from .main import EXIT_OK, EXIT_UNREACHABLE, EXIT_USAGE, connect_or_report

__all__ = ["TOKEN_VARIABLE", "add_command"]

TOKEN_VARIABLE = "AUDIT_VIEWER_TOKEN"
AUDIT_DSN_VARIABLE = "AUDIT_VIEWER_AUDIT_DSN"
DEFAULT_PORT = 8765


def add_command(commands: Any, add_dsn: Callable[[argparse.ArgumentParser], None]) -> None:
    """Register ``serve`` on ``commands`` (argparse sub-parsers)."""
    serve = commands.add_parser(
        "serve",
        help="run the read-only web viewer (needs the [viewer] extra)",
        description=f"Serve the audit trail viewer. Requires a token: ${TOKEN_VARIABLE} or --token-file "
        "(browsers sign in with it once; scripts send 'Authorization: Bearer <token>'). "
        "Exit codes: 0 stopped, 2 usage (no token, missing extra), 3 cannot connect.",
    )
    add_dsn(serve)
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default: %(default)s, loopback only)")
    serve.add_argument("--port", type=int, default=DEFAULT_PORT, help="port (default: %(default)s)")
    serve.add_argument("--token-file", metavar="FILE", help=f"read the token from FILE instead of ${TOKEN_VARIABLE}")
    serve.add_argument(
        "--audit-dsn",
        default=None,
        help=f"INSERT-capable DSN recording sign-ins to the audit table (default: ${AUDIT_DSN_VARIABLE}; "
        "unset: sign-ins are only logged)",
    )
    serve.add_argument("--digest-key-env", metavar="VAR", help="variable holding the digest HMAC key (enables verify)")
    serve.add_argument("--checkpoint", metavar="FILE", help="checkpoint file verify compares the chain head with")
    serve.set_defaults(run=run)


def read_token(token_file: str | None, environ: dict[str, str] | os._Environ[str] = os.environ) -> str | None:
    """The token from ``token_file`` or the environment (None: neither)."""
    if token_file:
        path = Path(token_file)
        mode = path.stat().st_mode
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            print(f"warning: {token_file} is readable by other users (chmod 600 it)", file=sys.stderr)
        return path.read_text(encoding="utf-8").strip() or None
    return environ.get(TOKEN_VARIABLE, "").strip() or None


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


async def _reachable(dsn: str) -> bool:
    conn = await connect_or_report(dsn, timeout=10)  # prints why, with the DSN masked
    if conn is None:
        return False
    await conn.close()
    return True


def run(args: argparse.Namespace, dsn: str) -> int:
    """Run the viewer until interrupted; returns the exit code."""
    try:
        token = read_token(args.token_file)
    except OSError as exc:
        print(f"error: cannot read --token-file: {exc.strerror}", file=sys.stderr)
        return EXIT_USAGE
    if token is None:
        print(f"error: the viewer needs a credential: set ${TOKEN_VARIABLE} or pass --token-file", file=sys.stderr)
        return EXIT_USAGE
    try:
        import uvicorn

        from ..viewer import TokenAuth, create_app
    except ImportError as exc:
        print(f"error: {exc.name} is missing: pip install 'audit-trail-middleware[viewer]'", file=sys.stderr)
        return EXIT_USAGE
    digest_key = None
    if args.digest_key_env:
        digest_key = os.environ.get(args.digest_key_env)
        if not digest_key:
            print(f"error: ${args.digest_key_env} is not set (the digest HMAC key)", file=sys.stderr)
            return EXIT_USAGE
    try:
        auth = TokenAuth(
            token,
            audit_dsn=args.audit_dsn or os.environ.get(AUDIT_DSN_VARIABLE) or None,
            schema=args.schema,
            table=args.table,
        )
        app = create_app(
            dsn=dsn,
            authorize=auth,
            schema=args.schema,
            table=args.table,
            digest_key=digest_key,
            checkpoint=args.checkpoint,
        )
    except ConfigurationError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if not asyncio.run(_reachable(dsn)):  # say so now, not as a 500 on the first page
        return EXIT_UNREACHABLE
    if not _loopback(args.host):
        print(
            f"warning: listening on {args.host}: put TLS in front of it, the token and cookie travel in clear text",
            file=sys.stderr,
        )
    print(f"audit viewer: http://{args.host}:{args.port}/ (sign in with the token)", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, proxy_headers=False, server_header=False, log_level="info")
    return EXIT_OK
