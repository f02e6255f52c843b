"""`python -m bench.argon2_rate SECONDS`: argon2id verifies per second in this process,
with the service's parameters, no HTTP and no database: the floor of the login figure
(run pinned to the service's core)."""

from __future__ import annotations

import sys
import time

from auth_service.config import AuthSettings
from auth_service.passwords import PasswordHasher

PASSWORD = b"benchmark passphrase"


def main() -> None:
    seconds = float(sys.argv[1])
    hasher = PasswordHasher(AuthSettings())
    stored = hasher._hash(PASSWORD)
    done, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        hasher._verify(PASSWORD, stored)
        done += 1
    print(done / (time.perf_counter() - started))
    hasher.close()


if __name__ == "__main__":
    main()
