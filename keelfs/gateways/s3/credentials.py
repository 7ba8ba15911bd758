"""Access keys: who an S3 request's access key id is, and the secret that signs for it.

``--credentials FILE``, TOML (``.toml``) or JSON (anything else)::

    [access_keys.AKIAEXAMPLE]
    secret = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
    user = "ann"                    # the keelfs user the gateway acts for
    display_name = "Ann Example"    # optional: the owner's DisplayName in answers

    [anonymous]                     # optional: unsigned requests, where an ACL allows them
    user = "s3-anonymous"           # the keelfs user they act as

    {"access_keys": {"AKIAEXAMPLE": {"secret": "...", "user": "ann"}}}

Without an ``[anonymous]`` table every unsigned request is refused (``AccessDenied``).
"""

from __future__ import annotations

import getpass
import json
import os
import secrets
import string
import tomllib
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "AccessKey",
    "CredentialsError",
    "KeyTable",
    "ensure_credentials",
    "load_credentials",
]


class CredentialsError(ValueError):
    pass


@dataclass(frozen=True)
class AccessKey:
    key_id: str
    secret: str
    user: str
    display_name: str = ""


class KeyTable(dict[str, AccessKey]):
    """Access key id -> its key, and ``anonymous_user``: the keelfs user unsigned requests
    act as where an ACL lets everyone in ("": none, every unsigned request refused)."""

    anonymous_user: str = ""

    def display_names(self) -> dict[str, str]:
        """keelfs user -> the DisplayName its keys give (the user's name where none)."""
        return {k.user: k.display_name for k in self.values() if k.display_name}


def load_credentials(path: str | Path) -> KeyTable:
    """Access key id -> its key, from a file (module doc); ``CredentialsError`` if malformed."""
    path = Path(path)
    try:
        text = path.read_text()
        raw = tomllib.loads(text) if path.suffix == ".toml" else json.loads(text)
    except (OSError, ValueError) as exc:
        raise CredentialsError(f"cannot read credentials {path}: {exc}") from None
    return parse_credentials(raw, str(path))


def parse_credentials(raw: object, where: str = "credentials") -> KeyTable:
    table = raw.get("access_keys") if isinstance(raw, dict) else None
    if not isinstance(table, dict) or not table:
        raise CredentialsError(f"{where}: expected an 'access_keys' table of at least one key")
    keys = KeyTable()
    assert isinstance(raw, dict)
    keys.anonymous_user = _anonymous_user(raw.get("anonymous"), where)
    for key_id, entry in table.items():
        if not isinstance(entry, dict):
            raise CredentialsError(f"{where}: access key {key_id!r} is not a table")
        secret, user = entry.get("secret"), entry.get("user")
        if not isinstance(secret, str) or not secret:
            raise CredentialsError(f"{where}: access key {key_id!r} has no secret")
        if not isinstance(user, str) or not user:
            raise CredentialsError(f"{where}: access key {key_id!r} names no keelfs user")
        display_name = entry.get("display_name", "")
        if not isinstance(display_name, str):
            raise CredentialsError(f"{where}: access key {key_id!r}: display_name is not text")
        keys[key_id] = AccessKey(key_id, secret, user, display_name)
    return keys


def _anonymous_user(entry: object, where: str) -> str:
    if entry is None:
        return ""
    user = entry.get("user") if isinstance(entry, dict) else None
    if not isinstance(user, str) or not user:
        raise CredentialsError(f"{where}: the 'anonymous' table names no keelfs user")
    return user


def ensure_credentials(path: Path, *, create: bool) -> KeyTable:
    """The keys of ``path``; ``create``: when it is not there, first write it (0600) with one
    new key for the user running this process (``keelfs server``'s default)."""
    if create and not path.exists():
        alphabet = string.ascii_uppercase + string.digits
        key_id = "KEELFS" + "".join(secrets.choice(alphabet) for _ in range(14))
        secret = secrets.token_urlsafe(30)
        text = (
            "# access keys of keelfs's S3 gateway (docs/s3.md)\n"
            f"[access_keys.{key_id}]\n"
            f'secret = "{secret}"\n'
            f'user = "{getpass.getuser()}"\n'
        )
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(text)
    return load_credentials(path)
