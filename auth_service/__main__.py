"""`python -m auth_service` serves HTTP. Operator commands:

python -m auth_service keys generate        create missing key material in keys/
python -m auth_service keys rotate          new signing key; the old one stays published
python -m auth_service keys rotate-code-secret
                                            new code secret; the old one stays accepted
python -m auth_service roles grant EMAIL admin
python -m auth_service roles revoke EMAIL admin
python -m auth_service housekeep            one housekeeping pass now; prints what went
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys

from auth_service.admin import UnknownAccount, housekeep, record_rotation, set_role
from auth_service.config import AuthSettings
from auth_service.keys import generate_missing, rotate, rotate_code_secret
from common.logs import setup_logging
from common.serve import serve

ROLE = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m auth_service")
    sub = parser.add_subparsers(dest="command")
    keys = sub.add_parser("keys", help="manage key material")
    keys.add_argument("action", choices=["generate", "rotate", "rotate-code-secret"])
    roles = sub.add_parser("roles", help="grant or revoke a role")
    roles.add_argument("action", choices=["grant", "revoke"])
    roles.add_argument("email")
    roles.add_argument("role")
    sub.add_parser("housekeep", help="delete spent rows now (see AUTH_HOUSEKEEPING_SECONDS)")
    args = parser.parse_args()

    setup_logging("auth")
    settings = AuthSettings()
    if args.command == "keys" and args.action == "generate":
        made = generate_missing(settings)
        for path in made:
            print(f"generated {path}")
        if not made:
            print("all key material present; nothing generated")
    elif args.command == "keys" and args.action == "rotate-code-secret":
        rotate_code_secret(settings)
        asyncio.run(record_rotation(settings, "code_secret_rotation"))
        print(
            f"new code secret in {settings.code_secret_path}; the old one is accepted from "
            f"{settings.retired_code_secrets_path}. Restart auth to use them (with several "
            "instances sharing these files, stop them all, then start them)."
        )
    elif args.command == "keys":
        old, new = rotate(settings)
        asyncio.run(record_rotation(settings, "key_rotation", old_kid=old, new_kid=new))
        print(f"rotated: now signing with {new}; {old} stays in the JWKS until its tokens expire")
    elif args.command == "roles":
        if not ROLE.match(args.role):
            sys.exit(f"invalid role name {args.role!r}")
        try:
            now = asyncio.run(set_role(settings, args.email, args.role, args.action == "grant"))
        except UnknownAccount:
            sys.exit(f"no account for {args.email}")
        print(f"{args.email}: roles {now} (in tokens from the next login or refresh)")
    elif args.command == "housekeep":
        print(json.dumps(asyncio.run(housekeep(settings))))
    else:
        from auth_service.app import create_app

        # One process, or AUTH_WORKERS processes each building the app from the environment.
        app = create_app(settings) if settings.workers == 1 else "auth_service.app:worker_app"
        serve(app, host=settings.host, port=settings.port, workers=settings.workers)


if __name__ == "__main__":
    main()
