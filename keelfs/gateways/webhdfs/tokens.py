"""WebHDFS delegation tokens (``GETDELEGATIONTOKEN``, ``RENEW...``, ``CANCEL...``,
``delegation=``), as Hadoop's NameNode issues them in its simple-mode-plus-token flow.

**The string** is Hadoop's ``Token.encodeToUrlString()``: URL-safe base64 (no padding) of the
token's ``Writable`` form (identifier, password, kind, service), the identifier being an
``AbstractDelegationTokenIdentifier`` (version 0; owner, renewer, real user; issue date, max
date; sequence number, master key id). So Hadoop's own classes decode it, and the user it
names, its renewer and its dates are what Hadoop tools print.

**The password** is HMAC-SHA256 of the identifier with the gateway's secret (``--token-secret
-file``): every gateway given the same file accepts the others' tokens; nothing else can make
one. The master key id in the identifier names the secret (a hash of it), so a token of an
older secret is refused as "can't be found" rather than as forged.

**Expiry.** A token lives at most until its max date (issue + ``max_lifetime``, 7 days as
HDFS), and until its expiry: issue + ``renew_interval`` (24 h as HDFS) unless renewed. A
renewal or a cancellation is state every gateway must see, so it is kept **in the cluster**
(:class:`TokenStateStore`): directory ``<token dir>/<token id>`` holds one empty entry per
renewal, named so that the latest expiry sorts first (``e`` + ``10**15 - expiry``), and an
entry ``c`` once cancelled (sorts before every ``e``). Entries are only ever created, never
overwritten, so a renewal racing a cancellation on two gateways cannot undo it, and a check is
one listing of at most two entries. The token string never changes (Hadoop clients keep
using the one they hold after a renewal).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import io
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from keelfs.gateways.webhdfs import errors

__all__ = [
    "HTTPS_KIND",
    "KIND",
    "MIN_SECRET_BYTES",
    "DelegationToken",
    "TokenPolicy",
    "TokenSigner",
    "TokenState",
    "TokenStateStore",
    "decode_url_string",
    "encode_url_string",
    "load_secret",
]

KIND = "WEBHDFS delegation"
"""Hadoop's ``WebHdfsConstants.WEBHDFS_TOKEN_KIND`` (a token got over HTTP)."""
HTTPS_KIND = "SWEBHDFS delegation"
"""Hadoop's ``SWEBHDFS_TOKEN_KIND`` (over HTTPS)."""
VERSION = 0
MIN_SECRET_BYTES = 32
"""A shorter secret file is refused: the HMAC key is all that stands between a caller and a
token naming any user."""
DAY_MS = 24 * 3600 * 1000
EXPIRY_SPAN = 10**15
"""Renewal entries are named ``e`` + ``EXPIRY_SPAN - expiry`` (15 digits), latest first."""
CANCELLED = "c"


# -- Hadoop's Writable encoding ------------------------------------------------------------------
def write_vlong(out: io.BytesIO, value: int) -> None:
    """``WritableUtils.writeVLong``: one byte for -112..127, else a length byte and the
    big-endian bytes (one's complement for negatives)."""
    if -112 <= value <= 127:
        out.write((value & 0xFF).to_bytes(1, "big"))
        return
    length = -112
    if value < 0:
        value ^= -1
        length = -120
    tmp = value
    while tmp:
        tmp >>= 8
        length -= 1
    out.write((length & 0xFF).to_bytes(1, "big"))
    size = -(length + 120) if length < -120 else -(length + 112)
    out.write(value.to_bytes(size, "big"))


def read_vlong(data: io.BytesIO) -> int:
    first = _read(data, 1)[0]
    first = first - 256 if first > 127 else first
    if first >= -112:
        return first
    negative = first < -120
    size = (-119 - first) if negative else (-111 - first)
    value = int.from_bytes(_read(data, size - 1), "big")
    return value ^ -1 if negative else value


def write_bytes(out: io.BytesIO, value: bytes) -> None:
    """A ``Text`` or a length-prefixed byte array: vint length, then the bytes."""
    write_vlong(out, len(value))
    out.write(value)


def read_bytes(data: io.BytesIO, limit: int = 1 << 16) -> bytes:
    length = read_vlong(data)
    if not 0 <= length <= limit:
        raise ValueError(f"a field of {length} bytes")
    return _read(data, length)


def _read(data: io.BytesIO, size: int) -> bytes:
    piece = data.read(size)
    if len(piece) != size:
        raise ValueError("the token ends early")
    return piece


# -- the token -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class DelegationToken:
    """An ``AbstractDelegationTokenIdentifier``'s fields, and the token's kind and service."""

    owner: str
    renewer: str
    real_user: str
    issue_date: int
    """ms since the epoch."""
    max_date: int
    """ms since the epoch: no renewal goes past it."""
    sequence: int
    key_id: int
    kind: str = KIND
    service: str = ""

    def identifier(self) -> bytes:
        out = io.BytesIO()
        out.write(bytes([VERSION]))
        for text in (self.owner, self.renewer, self.real_user):
            write_bytes(out, text.encode("utf-8"))
        write_vlong(out, self.issue_date)
        write_vlong(out, self.max_date)
        write_vlong(out, self.sequence)
        write_vlong(out, self.key_id)
        return out.getvalue()

    @property
    def token_id(self) -> str:
        """The name of this token's state in the cluster: a hash of its identifier."""
        return hashlib.sha256(self.identifier()).hexdigest()[:32]

    def describe(self) -> str:
        """As Hadoop's ``formatTokenId``: ``(WEBHDFS delegation token 7 for alice)``."""
        return f"({self.kind} token {self.sequence} for {self.owner})"


def parse_identifier(raw: bytes, kind: str, service: str) -> DelegationToken:
    data = io.BytesIO(raw)
    if _read(data, 1)[0] != VERSION:
        raise ValueError("an unknown token version")
    owner, renewer, real_user = (read_bytes(data).decode("utf-8") for _ in range(3))
    issue, max_date, sequence, key_id = (read_vlong(data) for _ in range(4))
    if data.read(1):
        raise ValueError("bytes after the identifier")
    return DelegationToken(
        owner, renewer, real_user, issue, max_date, sequence, key_id, kind, service
    )


def encode_url_string(token: DelegationToken, password: bytes) -> str:
    """Hadoop's ``Token.encodeToUrlString()``."""
    out = io.BytesIO()
    write_bytes(out, token.identifier())
    write_bytes(out, password)
    write_bytes(out, token.kind.encode("utf-8"))
    write_bytes(out, token.service.encode("utf-8"))
    return base64.urlsafe_b64encode(out.getvalue()).rstrip(b"=").decode("ascii")


def decode_url_string(text: str) -> tuple[DelegationToken, bytes]:
    """Hadoop's ``Token.decodeFromUrlString()``: the token and its password; ``ValueError``
    for anything that is not one."""
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (ValueError, TypeError) as exc:
        raise ValueError(f"not URL-safe base64: {exc}") from None
    data = io.BytesIO(raw)
    identifier = read_bytes(data)
    password = read_bytes(data)
    kind = read_bytes(data).decode("utf-8", "replace")
    service = read_bytes(data).decode("utf-8", "replace")
    if data.read(1):
        raise ValueError("bytes after the token")
    return parse_identifier(identifier, kind, service), password


def load_secret(path: Path) -> bytes:
    """The secret of ``--token-secret-file`` (surrounding white space dropped); at least
    :data:`MIN_SECRET_BYTES`."""
    secret = path.read_bytes().strip()
    if len(secret) < MIN_SECRET_BYTES:
        raise ValueError(
            f"{path}: a token secret needs at least {MIN_SECRET_BYTES} bytes "
            f"(e.g. `head -c 48 /dev/urandom | base64 > {path.name}`)"
        )
    return secret


@dataclass(frozen=True)
class TokenPolicy:
    """HDFS's ``dfs.namenode.delegation.token.renew-interval`` and ``max-lifetime``."""

    renew_interval_ms: int = DAY_MS
    max_lifetime_ms: int = 7 * DAY_MS


class TokenSigner:
    """Makes and checks the password of a token with one secret."""

    def __init__(self, secret: bytes, policy: TokenPolicy | None = None) -> None:
        self._secret = secret
        self.policy = policy or TokenPolicy()
        self.key_id = int.from_bytes(hashlib.sha256(b"key-id" + secret).digest()[:4], "big") >> 1

    def password(self, token: DelegationToken) -> bytes:
        return hmac.new(self._secret, token.identifier(), hashlib.sha256).digest()

    def issue(
        self,
        owner: str,
        renewer: str,
        real_user: str,
        kind: str,
        service: str,
        now_ms: int | None = None,
    ) -> tuple[DelegationToken, str]:
        now = _now_ms() if now_ms is None else now_ms
        token = DelegationToken(
            owner,
            renewer,
            real_user,
            now,
            now + self.policy.max_lifetime_ms,
            secrets.randbits(31),
            self.key_id,
            kind,
            service,
        )
        return token, encode_url_string(token, self.password(token))

    def verify(self, text: str) -> DelegationToken:
        """The token ``text`` encodes, its password checked (not its expiry: that needs the
        cluster). ``SecurityException`` (401) for a string that is no token, ``InvalidToken``
        (403) for one this gateway's secret did not sign."""
        try:
            token, password = decode_url_string(text)
        except ValueError as exc:
            raise errors.security(
                f"Failed to obtain user group information: a delegation token that cannot "
                f"be decoded ({exc})"
            ) from None
        if token.key_id != self.key_id:
            raise errors.invalid_token(
                f"token {token.describe()} can't be found in cache (unknown master key)"
            )
        if not hmac.compare_digest(password, self.password(token)):
            raise errors.invalid_token(f"token {token.describe()}: invalid password")
        return token

    def initial_expiry(self, token: DelegationToken) -> int:
        return min(token.issue_date + self.policy.renew_interval_ms, token.max_date)


# -- the state every gateway sees ----------------------------------------------------------------
@dataclass(frozen=True)
class TokenState:
    cancelled: bool
    renewed_until: int | None
    """The latest expiry a renewal gave (None: never renewed)."""


class _Directory(Protocol):
    async def names(self, path: str, limit: int) -> list[str]: ...
    async def create(self, path: str) -> None: ...


class TokenStateStore:
    """Renewals and cancellations under ``directory`` in the cluster (module docstring),
    read and written through ``fs`` (the gateway's own identity)."""

    def __init__(self, directory: str, fs: _Directory) -> None:
        self.directory = directory.rstrip("/") or "/"
        self._fs = fs

    def _path(self, token: DelegationToken, entry: str = "") -> str:
        base = f"{self.directory}/{token.token_id}"
        return f"{base}/{entry}" if entry else base

    async def state(self, token: DelegationToken) -> TokenState:
        names = await self._fs.names(self._path(token), 2)
        renewed = next((EXPIRY_SPAN - int(n[1:]) for n in names if n.startswith("e")), None)
        return TokenState(CANCELLED in names, renewed)

    async def renew(self, token: DelegationToken, expiry: int) -> None:
        await self._fs.create(self._path(token, f"e{EXPIRY_SPAN - expiry:015d}"))

    async def cancel(self, token: DelegationToken) -> None:
        await self._fs.create(self._path(token, CANCELLED))


async def check_live(
    signer: TokenSigner, store: TokenStateStore, token: DelegationToken, now_ms: int | None = None
) -> int:
    """The token's current expiry; ``InvalidToken`` if it is cancelled or expired."""
    now = _now_ms() if now_ms is None else now_ms
    state = await store.state(token)
    if state.cancelled:
        raise errors.invalid_token(f"token {token.describe()} can't be found in cache")
    expiry = max(signer.initial_expiry(token), state.renewed_until or 0)
    expiry = min(expiry, token.max_date)
    if now > expiry:
        raise errors.invalid_token(
            f"token {token.describe()} is expired, current time: {now} "
            f"expected renewal time: {expiry}"
        )
    return expiry


async def renew(
    signer: TokenSigner,
    store: TokenStateStore,
    token: DelegationToken,
    renewer: str,
    now_ms: int | None = None,
) -> int:
    """HDFS's ``renewToken``: only the token's renewer, only a live token; the new expiry
    (now + the renew interval, at most the max date)."""
    now = _now_ms() if now_ms is None else now_ms
    if not token.renewer:
        raise errors.access_denied(
            f"{renewer} tried to renew a token {token.describe()} without a renewer"
        )
    if token.renewer != renewer:
        raise errors.access_denied(
            f"{renewer} tries to renew a token {token.describe()} with non-matching "
            f"renewer {token.renewer}"
        )
    if now > token.max_date:
        raise errors.invalid_token(
            f"{renewer} tried to renew an expired token {token.describe()} max expiration "
            f"date: {token.max_date} currentTime: {now}"
        )
    await check_live(signer, store, token, now)
    expiry = min(now + signer.policy.renew_interval_ms, token.max_date)
    await store.renew(token, expiry)
    return expiry


async def cancel(store: TokenStateStore, token: DelegationToken, canceller: str) -> None:
    """HDFS's ``cancelToken``: its owner or its renewer."""
    if canceller not in (token.owner, token.renewer):
        raise errors.access_denied(
            f"{canceller} is not authorized to cancel the token {token.describe()}"
        )
    if (await store.state(token)).cancelled:
        raise errors.invalid_token(f"Token not found {token.describe()}")
    await store.cancel(token)


def _now_ms() -> int:
    return int(time.time() * 1000)
