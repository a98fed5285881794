"""Ed25519 (RFC 8032), in plain Python: what checksum-database notes are signed with.

The core needs three operations: the public key of a seed, a signature, and checking
one. Verification is "cofactorless" like Go's crypto/ed25519 (``[S]B == R + [k]A``,
compared as encodings), refuses ``S >= L`` and points that do not decode. It takes a few
milliseconds; the gateway verifies a tree head once per new head, not per request.
"""

from __future__ import annotations

import hashlib

P = 2**255 - 19
L = 2**252 + 27742317777372353535851937790883648493  # the order of the base point
D = (-121665 * pow(121666, P - 2, P)) % P
SQRT_M1 = pow(2, (P - 1) // 4, P)  # a square root of -1

Point = tuple[int, int, int, int]  # extended coordinates (X, Y, Z, T), x = X/Z, y = Y/Z


def _add(p: Point, q: Point) -> Point:
    x1, y1, z1, t1 = p
    x2, y2, z2, t2 = q
    a = (y1 - x1) * (y2 - x2) % P
    b = (y1 + x1) * (y2 + x2) % P
    c = 2 * t1 * t2 * D % P
    d = 2 * z1 * z2 % P
    e, f, g, h = b - a, d - c, d + c, b + a
    return (e * f % P, g * h % P, f * g % P, e * h % P)


def _double(p: Point) -> Point:
    x1, y1, z1, _ = p
    a = x1 * x1 % P
    b = y1 * y1 % P
    c = 2 * z1 * z1 % P
    h = a + b
    e = h - (x1 + y1) * (x1 + y1) % P
    g = a - b
    f = c + g
    return (e * f % P, g * h % P, f * g % P, e * h % P)


_IDENTITY: Point = (0, 1, 1, 0)


def _multiply(scalar: int, p: Point) -> Point:
    result = _IDENTITY
    while scalar:
        if scalar & 1:
            result = _add(result, p)
        p = _double(p)
        scalar >>= 1
    return result


def _recover_x(y: int, sign: int) -> int | None:
    if y >= P:
        return None
    x2 = (y * y - 1) * pow(D * y * y + 1, P - 2, P) % P
    if x2 == 0:
        return None if sign else 0
    x = pow(x2, (P + 3) // 8, P)
    if (x * x - x2) % P != 0:
        x = x * SQRT_M1 % P
    if (x * x - x2) % P != 0:
        return None
    if x & 1 != sign:
        x = P - x
    return x


_BY = 4 * pow(5, P - 2, P) % P
_BX = _recover_x(_BY, 0)
assert _BX is not None
BASE: Point = (_BX, _BY, 1, _BX * _BY % P)
_BASE_POWERS: list[Point] = []  # BASE * 2**i: a fixed-base multiplication is only additions


def _base_times(scalar: int) -> Point:
    if not _BASE_POWERS:
        p = BASE
        for _ in range(256):
            _BASE_POWERS.append(p)
            p = _double(p)
    result = _IDENTITY
    i = 0
    while scalar:
        if scalar & 1:
            result = _add(result, _BASE_POWERS[i])
        scalar >>= 1
        i += 1
    return result


def _encode(p: Point) -> bytes:
    x, y, z, _ = p
    zinv = pow(z, P - 2, P)
    x, y = x * zinv % P, y * zinv % P
    return (y | ((x & 1) << 255)).to_bytes(32, "little")


def _decode(data: bytes) -> Point | None:
    if len(data) != 32:
        return None
    value = int.from_bytes(data, "little")
    y, sign = value & ((1 << 255) - 1), value >> 255
    x = _recover_x(y, sign)
    if x is None:
        return None
    return (x, y, 1, x * y % P)


def _secret(seed: bytes) -> tuple[int, bytes]:
    digest = hashlib.sha512(seed).digest()
    a = int.from_bytes(digest[:32], "little")
    a &= (1 << 254) - 8
    a |= 1 << 254
    return a, digest[32:]


def _hash_int(*parts: bytes) -> int:
    return int.from_bytes(hashlib.sha512(b"".join(parts)).digest(), "little") % L


def public_key(seed: bytes) -> bytes:
    """The 32-byte public key of a 32-byte seed."""
    if len(seed) != 32:
        raise ValueError("an Ed25519 seed is 32 bytes")
    a, _ = _secret(seed)
    return _encode(_base_times(a))


def sign(seed: bytes, msg: bytes) -> bytes:
    """The 64-byte signature of `msg` by the key of `seed` (deterministic)."""
    a, prefix = _secret(seed)
    public = _encode(_base_times(a))
    r = _hash_int(prefix, msg)
    big_r = _encode(_base_times(r))
    k = _hash_int(big_r, public, msg)
    s = (r + k * a) % L
    return big_r + s.to_bytes(32, "little")


def verify(public: bytes, msg: bytes, sig: bytes) -> bool:
    """Whether `sig` is the signature of `msg` by the key `public`."""
    if len(sig) != 64 or len(public) != 32:
        return False
    a_point = _decode(public)
    if a_point is None or _decode(sig[:32]) is None:
        return False
    s = int.from_bytes(sig[32:], "little")
    if s >= L:
        return False
    k = _hash_int(sig[:32], public, msg)
    minus_a = (P - a_point[0], a_point[1], a_point[2], P - a_point[3])
    check = _add(_base_times(s), _multiply(k, minus_a))  # [S]B - [k]A must be R
    return _encode(check) == sig[:32]
