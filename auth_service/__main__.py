"""`python -m auth_service` serves HTTP; `python -m auth_service keys generate` makes keys."""

from __future__ import annotations

import argparse
import logging

import uvicorn

from auth_service.app import create_app
from auth_service.config import AuthSettings
from auth_service.keys import generate_missing


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m auth_service")
    sub = parser.add_subparsers(dest="command")
    keys = sub.add_parser("keys", help="manage key material")
    keys.add_argument("action", choices=["generate"], help="create missing keys in keys/")
    args = parser.parse_args()

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    settings = AuthSettings()
    if args.command == "keys":
        made = generate_missing(settings)
        for path in made:
            print(f"generated {path}")
        if not made:
            print("all key material present; nothing generated")
        return
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level="info")


if __name__ == "__main__":
    main()
