"""`python -m web_service`: the web front end; `python -m web_service keys generate` makes
the session key file if it is missing."""

from __future__ import annotations

import argparse

from common.logs import setup_logging
from common.serve import serve
from web_service.app import create_app
from web_service.config import WebSettings
from web_service.session_keys import generate_missing


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m web_service")
    sub = parser.add_subparsers(dest="command")
    keys = sub.add_parser("keys", help="session key material")
    keys.add_argument("action", choices=["generate"])
    args = parser.parse_args()
    settings = WebSettings()
    if args.command == "keys":
        path = settings.session_key_path
        print(f"generated {path}" if generate_missing(path) else f"{path} exists; left as it is")
        return
    setup_logging("web")
    app = create_app(settings) if settings.workers == 1 else "web_service.app:worker_app"
    serve(app, host=settings.host, port=settings.port, workers=settings.workers)


if __name__ == "__main__":
    main()
