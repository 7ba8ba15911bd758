"""Delegation tokens' pure parts (``keelfs.gateways.webhdfs.tokens``): Hadoop's Writable and
URL-string encoding, the HMAC password, expiry, renewal and cancellation rules over a store
kept in memory (the cluster-backed store is exercised in ``test_webhdfs_clients.py``)."""

from __future__ import annotations

import asyncio
import base64
import io
from pathlib import Path

import pytest

from keelfs.gateways.webhdfs import errors, tokens
from keelfs.gateways.webhdfs.tokens import TokenPolicy, TokenSigner, TokenStateStore

SECRET = b"s" * 40
HOUR = 3600 * 1000


class MemoryDirectory:
    """The cluster directory as a dict of created paths."""

    def __init__(self) -> None:
        self.paths: set[str] = set()

    async def names(self, path: str, limit: int) -> list[str]:
        prefix = path + "/"
        return sorted(p[len(prefix) :] for p in self.paths if p.startswith(prefix))[:limit]

    async def create(self, path: str) -> None:
        self.paths.add(path)


@pytest.mark.parametrize(
    ("value", "encoded"),
    [
        (0, b"\x00"),
        (127, b"\x7f"),
        (-1, b"\xff"),
        (-112, b"\x90"),
        (128, b"\x8f\x80"),
        (300, b"\x8e\x01\x2c"),
        (-113, b"\x87\x70"),
        (1_700_000_000_000, b"\x8a\x01\x8b\xcf\xe5\x68\x00"),
    ],
)
def test_vlong_is_hadoops_writable_encoding(value: int, encoded: bytes) -> None:
    out = io.BytesIO()
    tokens.write_vlong(out, value)
    assert out.getvalue() == encoded
    assert tokens.read_vlong(io.BytesIO(encoded)) == value


def test_url_string_is_hadoops_token_layout() -> None:
    signer = TokenSigner(SECRET)
    token, text = signer.issue("alice", "yarn", "", tokens.KIND, "127.0.0.1:9870", 1_000)
    assert "=" not in text and "+" not in text and "/" not in text
    raw = io.BytesIO(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
    identifier = tokens.read_bytes(raw)
    assert identifier[0] == 0  # version, then owner, renewer, real user as Text
    assert identifier[1:7] == b"\x05alice" and identifier[7:12] == b"\x04yarn"
    assert tokens.read_bytes(raw) == signer.password(token)
    assert tokens.read_bytes(raw) == b"WEBHDFS delegation"
    assert tokens.read_bytes(raw) == b"127.0.0.1:9870"
    decoded, _ = tokens.decode_url_string(text)
    assert decoded == token
    assert (decoded.issue_date, decoded.max_date) == (1_000, 1_000 + 7 * 24 * HOUR)


def test_forged_foreign_and_garbage_tokens_are_refused() -> None:
    signer = TokenSigner(SECRET)
    token, text = signer.issue("alice", "", "", tokens.KIND, "")
    assert signer.verify(text) == token
    # the same identifier with bob's name and alice's password
    forged = tokens.DelegationToken(
        "bob", "", "", token.issue_date, token.max_date, token.sequence, token.key_id
    )
    with pytest.raises(errors.HadoopError) as caught:
        signer.verify(tokens.encode_url_string(forged, signer.password(token)))
    assert caught.value.exception == errors.INVALID_TOKEN and caught.value.exception.status == 403
    # signed by another gateway's secret
    _, foreign = TokenSigner(b"o" * 40).issue("alice", "", "", tokens.KIND, "")
    with pytest.raises(errors.HadoopError, match="can't be found") as caught:
        signer.verify(foreign)
    assert caught.value.exception == errors.INVALID_TOKEN
    for garbage in ("", "!!!", "AAAA", text[:-6]):
        with pytest.raises(errors.HadoopError) as caught:
            signer.verify(garbage)
        assert caught.value.exception == errors.SECURITY and caught.value.exception.status == 401


def test_expiry_renewal_and_cancellation() -> None:
    async def scenario() -> None:
        signer = TokenSigner(SECRET, TokenPolicy(renew_interval_ms=HOUR, max_lifetime_ms=3 * HOUR))
        store = TokenStateStore("/.t", MemoryDirectory())
        token, _ = signer.issue("alice", "yarn", "", tokens.KIND, "", now_ms=0)
        assert await tokens.check_live(signer, store, token, now_ms=HOUR) == HOUR
        with pytest.raises(errors.HadoopError, match="is expired"):
            await tokens.check_live(signer, store, token, now_ms=HOUR + 1)
        # only the renewer renews; the new expiry is kept where every gateway sees it
        with pytest.raises(errors.HadoopError, match="non-matching renewer"):
            await tokens.renew(signer, store, token, "alice", now_ms=HOUR // 2)
        assert await tokens.renew(signer, store, token, "yarn", now_ms=HOUR // 2) == 3 * HOUR // 2
        assert await tokens.renew(signer, store, token, "yarn", now_ms=HOUR) == 2 * HOUR
        other_gateway = TokenSigner(SECRET, signer.policy)
        assert await tokens.check_live(other_gateway, store, token, now_ms=2 * HOUR) == 2 * HOUR
        # never past the max date; an expired token is not renewed
        assert await tokens.renew(signer, store, token, "yarn", now_ms=19 * HOUR // 10) == (
            29 * HOUR // 10
        )
        assert await tokens.renew(signer, store, token, "yarn", now_ms=5 * HOUR // 2) == 3 * HOUR
        with pytest.raises(errors.HadoopError, match="expired token"):
            await tokens.renew(signer, store, token, "yarn", now_ms=3 * HOUR + 1)
        # cancelled by its owner or renewer only; a renewal after it does not revive it
        with pytest.raises(errors.HadoopError, match="not authorized to cancel"):
            await tokens.cancel(store, token, "mallory")
        await tokens.cancel(store, token, "alice")
        with pytest.raises(errors.HadoopError, match="can't be found"):
            await tokens.check_live(signer, store, token, now_ms=HOUR)
        await store.renew(token, 3 * HOUR)  # a renewal racing the cancel on another gateway
        with pytest.raises(errors.HadoopError, match="can't be found"):
            await tokens.check_live(signer, store, token, now_ms=HOUR)
        with pytest.raises(errors.HadoopError, match="Token not found"):
            await tokens.cancel(store, token, "yarn")
        # a token without a renewer cannot be renewed (as HDFS)
        lone, _ = signer.issue("alice", "", "", tokens.KIND, "", now_ms=0)
        with pytest.raises(errors.HadoopError, match="without a renewer"):
            await tokens.renew(signer, store, lone, "alice", now_ms=1)

    asyncio.run(scenario())


def test_a_short_secret_is_refused(tmp_path: Path) -> None:
    short = tmp_path / "short"
    short.write_text("x" * 31 + "\n")
    with pytest.raises(ValueError, match="at least 32 bytes"):
        tokens.load_secret(short)
    good = tmp_path / "good"
    good.write_text("y" * 32 + "\n")
    assert tokens.load_secret(good) == b"y" * 32


def test_a_failure_log_line_hides_tokens() -> None:
    from aiohttp.test_utils import make_mocked_request

    from keelfs.gateways.webhdfs.app import _loggable

    request = make_mocked_request(
        "GET", "/webhdfs/v1/a?op=LISTSTATUS&delegation=SECRETTOKEN&Token=OTHER&user.name=ann"
    )
    line = _loggable(request)
    assert "SECRETTOKEN" not in line and "OTHER" not in line
    assert "op=LISTSTATUS" in line and "user.name=ann" in line
