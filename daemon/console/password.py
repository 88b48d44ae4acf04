"""Console password hashes: scrypt from the standard library (``hashlib.scrypt``, memory-hard), stored as
``scrypt$n$r$p$salt$hash`` in ``console.password_hash``. ``python3 -m daemon.console.password`` asks for
a password (twice, not echoed) and prints its hash for the configuration file.
"""

from __future__ import annotations

import base64
import getpass
import hashlib
import hmac
import os
import sys

# Interactive-login cost: ~50 ms and 16 MiB per check on a small server (OWASP's scrypt minimum is N=2^17, r=8).
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1
_MAXMEM = 64 * 1024 * 1024


def hash_password(password: str, *, n: int = SCRYPT_N, r: int = SCRYPT_R, p: int = SCRYPT_P) -> str:
    salt = os.urandom(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=n, r=r, p=p, maxmem=_MAXMEM, dklen=32)
    return "$".join(["scrypt", str(n), str(r), str(p), base64.b64encode(salt).decode(), base64.b64encode(digest).decode()])


def verify_password(password: str, stored: str) -> bool:
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        expected = base64.b64decode(digest)
        actual = hashlib.scrypt(password.encode(), salt=base64.b64decode(salt), n=int(n), r=int(r), p=int(p),
                                maxmem=_MAXMEM, dklen=len(expected))
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(actual, expected)


def main() -> int:
    first = getpass.getpass("console password: ")
    if len(first) < 10:
        print("use at least 10 characters", file=sys.stderr)
        return 2
    if getpass.getpass("again: ") != first:
        print("the two entries differ", file=sys.stderr)
        return 2
    print(hash_password(first))
    return 0


if __name__ == "__main__":
    sys.exit(main())
