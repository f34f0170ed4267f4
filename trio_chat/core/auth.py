"""Token mode: who a signed token says a client is, and where it may go.

Theory of operation
-------------------
The server never holds a user list. An operator's site signs a JWT; a
`hello` carries it; this module checks it and answers with a `Grant` (the
name, the rooms, the expiry) or raises `Unauthorized` with the reason.
Pure: PyJWT checks the signature (no signature code of ours), and every
time check is ours, against a `now` the caller passes, so that tests and
hypothesis choose the clock.

Invariants:

* Algorithms are pinned by the key, never read from the token: a secret
  verifies HS256 only, an RSA public key RS256 only, an EC P-256 public key
  ES256 only. So `none` is never accepted, and an HS256 token "signed" with
  the public key as its HMAC secret is refused (no key confusion).
* A token admits a client only while `nbf - LEEWAY <= now < exp + LEEWAY`
  (and `iat - LEEWAY <= now`): the leeway absorbs clock skew between the
  signer and this server, on both ends, and a connected client is closed
  when `exp + LEEWAY` comes.
* The name is the token's `sub`, normalised like any name; the `rooms`
  claim, when present, lists the rooms it grants, where `*` matches any run
  of room characters (`room_granted`; every other character is literal, and
  the match is case-sensitive, as room names are).
* Reserved names (open mode) are compared by `protocol.name_keys`, the very
  look-alike folding that decides name clashes.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Final

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from . import protocol
from .errors import TrioChatError
from .protocol import ProtocolError, RefusalReason, Unauthorized

LEEWAY: Final = 30.0  # seconds of clock skew allowed around nbf, iat and exp
MIN_SECRET_BYTES: Final = 32  # HS256 wants a key of at least its 256-bit output (RFC 7518)
MIN_RSA_BITS: Final = 2048
MAX_ROOM_PATTERNS: Final = 256  # a `rooms` claim longer than this is no plan
# A room pattern: room characters and `*`.
_ROOM_PATTERN: Final = re.compile(r"[A-Za-z0-9_.\-*]{1,64}", re.ASCII)

PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey


class BadKey(TrioChatError, ValueError):
    """A key file's content cannot verify tokens; the message says why."""


@dataclass(frozen=True, slots=True)
class Grant:
    """What a valid token admits: a name, the rooms (None: every room), and
    until when (`expires`: the token's `exp`, seconds since the epoch)."""

    name: str
    rooms: tuple[str, ...] | None
    expires: float

    def closes_in(self, now: float) -> float:
        """Seconds from `now` until a connection on this token must close."""
        return self.expires + LEEWAY - now


@dataclass(frozen=True, slots=True)
class TokenVerifier:
    """A key and the one algorithm it verifies. Its repr never shows the key."""

    algorithm: str  # "HS256", "RS256" or "ES256"
    key: str | bytes | PublicKey = field(repr=False)

    @property
    def can_sign(self) -> bool:
        """Whether this is a shared secret (which `trio-chat token` can sign with)."""
        return self.algorithm == "HS256"

    def verify(self, token: str, now: float, ref: str | None = None) -> Grant:
        """Check `token`'s signature and claims at wall-clock time `now`.

        Raises:
            Unauthorized: with the reason (bad_token, expired, not_yet_valid).
        """
        try:
            claims = jwt.decode(
                token,
                self.key,
                algorithms=[self.algorithm],
                # The signature only: the claims are checked below, against `now`.
                options={
                    "verify_signature": True,
                    "verify_exp": False,
                    "verify_nbf": False,
                    "verify_iat": False,
                    "verify_aud": False,
                    "verify_iss": False,
                    "verify_sub": False,
                    "verify_jti": False,
                },
            )
        except jwt.InvalidAlgorithmError:
            raise Unauthorized(
                RefusalReason.BAD_TOKEN, f"the token must be signed with {self.algorithm}", ref
            ) from None
        except jwt.InvalidSignatureError:
            raise Unauthorized(
                RefusalReason.BAD_TOKEN, "the token's signature is not valid", ref
            ) from None
        except jwt.PyJWTError:
            raise Unauthorized(RefusalReason.BAD_TOKEN, "the token is malformed", ref) from None
        return check_claims(claims, now, ref)


def _number(value: object) -> float | None:
    """A NumericDate (a JSON number, not a boolean, finite), else None."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def check_claims(claims: Mapping[str, object], now: float, ref: str | None = None) -> Grant:
    """The grant of a token's (signature-checked) claims at time `now`.

    Raises:
        Unauthorized: `bad_token` for a missing or ill-typed `sub`, `exp`,
            `nbf`, `iat` or `rooms`, or a `sub` that is no valid name;
            `expired`; `not_yet_valid`.
    """
    bad = RefusalReason.BAD_TOKEN
    sub = claims.get("sub")
    if not isinstance(sub, str):
        raise Unauthorized(bad, "the token has no 'sub' (the name)", ref)
    try:
        name = protocol.normalize_name(sub)
    except ProtocolError as error:
        raise Unauthorized(bad, f"the token's name is not valid: {error.message}", ref) from None
    if "exp" not in claims:
        raise Unauthorized(bad, "the token has no 'exp' (expiry time)", ref)
    times: dict[str, float] = {}
    for claim in ("exp", "nbf", "iat"):
        if claim in claims:
            value = _number(claims[claim])
            if value is None:
                raise Unauthorized(bad, f"the token's {claim!r} is not a number", ref)
            times[claim] = value
    rooms = claims.get("rooms")
    patterns: tuple[str, ...] | None = None
    if rooms is not None:
        if not (
            isinstance(rooms, list)
            and len(rooms) <= MAX_ROOM_PATTERNS
            and all(isinstance(room, str) for room in rooms)
        ):
            raise Unauthorized(bad, "the token's 'rooms' is not a list of room names", ref)
        patterns = tuple(rooms)
    if now >= times["exp"] + LEEWAY:
        raise Unauthorized(RefusalReason.EXPIRED, "the token has expired", ref)
    if now < times.get("nbf", -math.inf) - LEEWAY or now < times.get("iat", -math.inf) - LEEWAY:
        raise Unauthorized(RefusalReason.NOT_YET_VALID, "the token is not valid yet", ref)
    return Grant(name, patterns, times["exp"])


def room_granted(patterns: tuple[str, ...] | None, room: str) -> bool:
    """Whether a `rooms` claim (None: every room) grants `room`.

    `*` matches any run of characters, the empty run included; every other
    character matches itself only, case-sensitively. Not `fnmatch`, whose
    `?` and `[...]` would be surprises in a list of room names.
    """
    if patterns is None:
        return True
    return any(_pattern_matches(pattern, room) for pattern in patterns)


def _pattern_matches(pattern: str, room: str) -> bool:
    if "*" not in pattern:
        return pattern == room
    parts = pattern.split("*")
    head, *middle, tail = parts
    if len(room) < len(head) + len(tail) or not (room.startswith(head) and room.endswith(tail)):
        return False
    # Each middle part at its leftmost place: if any placement works, this one does.
    position, end = len(head), len(room) - len(tail)
    for part in middle:
        found = room.find(part, position, end)
        if found < 0:
            return False
        position = found + len(part)
    return True


def check_room_pattern(text: str) -> str:
    """A room pattern for a token's `rooms` (room characters and `*`).

    Raises:
        ValueError: with a short reason.
    """
    if _ROOM_PATTERN.fullmatch(text) is None:
        raise ValueError(
            f"not a room or room pattern: {text!r} (1 to 64 characters of A-Z a-z 0-9 _ - . and *)"
        )
    return text


def issue_token(
    secret: bytes, name: str, *, now: float, ttl: float, rooms: Iterable[str] | None = None
) -> str:
    """An HS256 token for `name` (normalised), valid from `now` for `ttl` seconds.

    Raises:
        ProtocolError: `bad_name` if `name` is not a valid name.
    """
    claims: dict[str, object] = {
        "sub": protocol.normalize_name(name),
        "iat": int(now),
        "exp": int(now + ttl),
    }
    if rooms is not None:
        claims["rooms"] = list(rooms)
    return jwt.encode(claims, secret, algorithm="HS256")


# --------------------------------------------------------------------------
# Keys, from the bytes of a key file


def secret_verifier(data: bytes) -> TokenVerifier:
    """An HS256 verifier for a secret file's content (surrounding white space,
    such as the newline `openssl rand -hex 32 > file` leaves, is dropped).

    Raises:
        BadKey: the secret is too short, or is a PEM key.
    """
    secret = data.strip()
    if secret.startswith(b"-----BEGIN"):
        # A PEM key as an HMAC secret is how key confusion starts.
        raise BadKey("a PEM key is no HS256 secret (use --auth-public-key for RS256/ES256)")
    if len(secret) < MIN_SECRET_BYTES:
        raise BadKey(
            f"the secret must be at least {MIN_SECRET_BYTES} bytes (e.g. openssl rand -hex 32)"
        )
    return TokenVerifier("HS256", secret)


def public_key_verifier(data: bytes) -> TokenVerifier:
    """An RS256 or ES256 verifier for a PEM public key file's content.

    Raises:
        BadKey: not a PEM public key, a private key, or an unusable one
            (RSA under 2048 bits, an EC curve other than P-256).
    """
    if b"PRIVATE KEY" in data:
        raise BadKey("this is a private key: give the server the public key only")
    try:
        key = load_pem_public_key(data)
    except ValueError:
        raise BadKey("not a PEM public key") from None
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size < MIN_RSA_BITS:
            raise BadKey(f"an RSA key must have at least {MIN_RSA_BITS} bits")
        return TokenVerifier("RS256", key)
    if isinstance(key, ec.EllipticCurvePublicKey):
        if not isinstance(key.curve, ec.SECP256R1):
            raise BadKey("an EC key must be on P-256 (ES256)")
        return TokenVerifier("ES256", key)
    raise BadKey("the key must be RSA (RS256) or EC P-256 (ES256)")


# --------------------------------------------------------------------------
# Reserved names


@dataclass(frozen=True, slots=True)
class ReservedNames:
    """Names open-mode clients cannot take, with their comparison keys."""

    names: tuple[str, ...] = ()
    keys: frozenset[str] = frozenset()

    @classmethod
    def of(cls, names: Iterable[str]) -> ReservedNames:
        """Reserve `names` (each normalised).

        Raises:
            ProtocolError: `bad_name` for one that is no valid name.
        """
        normal = tuple(dict.fromkeys(protocol.normalize_name(name) for name in names))
        keys = frozenset(key for name in normal for key in protocol.name_keys(name))
        return cls(normal, keys)

    def holds(self, name: str) -> bool:
        """Whether `name` is reserved, or looks like a reserved name."""
        return not self.keys.isdisjoint(protocol.name_keys(name))
