"""Signing keys: generation, JWS signing, a rotating on-disk key store, public JWKS.

Implements RFC 7517 (JSON Web Key and JWK Set), RFC 7638 (JWK thumbprints, used as
``kid``), RFC 7515 §7.1 (compact serialization of what we sign), RFC 7518 §3 and
RFC 8037 / RFC 9864 (the ES256, RS256 and EdDSA/Ed25519 algorithms) and the key
rotation advice of RFC 8725 §3.

Key generation and loading are file and CPU work done once at start-up, so this
module is synchronous on purpose: call it before serving, or through
``anyio.to_thread.run_sync`` from async code.
"""

from __future__ import annotations

import base64
import calendar
import json
import os
import stat
import threading
import time
from collections.abc import Callable, Collection, Iterable, Mapping
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from joserfc import jwt
from joserfc.errors import JoseError, UnsupportedAlgorithmError
from joserfc.jwk import ECKey, Key, KeySet, OKPKey, RSAKey
from joserfc.jws import JWSRegistry

from keycard_agents._errors import ConfigurationError, InvalidTokenError
from keycard_agents._logs import get_logger

if TYPE_CHECKING:
    from joserfc._rfc7515.model import JWSAlgModel

__all__ = [
    "ALGORITHMS",
    "EDDSA_NAMES",
    "KeyResolver",
    "KeyStore",
    "SigningKey",
    "StaticKeys",
    "VerificationKeys",
    "allowed_algorithms",
    "import_jwk",
    "jws_registry",
    "key_fits_algorithm",
    "show_untrusted",
]

logger = get_logger("keycard_agents.keys")

#: The algorithms we sign with and accept by default (RFC 8725 §3.1 allow-list).
#: ``Ed25519`` (the RFC 9864 name) is accepted wherever ``EdDSA`` is.
ALGORITHMS: tuple[str, ...] = ("ES256", "EdDSA", "RS256")

# Every asymmetric algorithm a verifier may opt into: alg -> (kty, curve or None).
# HMAC and "none" are absent on purpose: they can never be allowed.
_ALG_KEY_TYPES: dict[str, tuple[str, str | None]] = {
    "ES256": ("EC", "P-256"),
    "ES384": ("EC", "P-384"),
    "ES512": ("EC", "P-521"),
    "RS256": ("RSA", None),
    "RS384": ("RSA", None),
    "RS512": ("RSA", None),
    "PS256": ("RSA", None),
    "PS384": ("RSA", None),
    "PS512": ("RSA", None),
    "EdDSA": ("OKP", "Ed25519"),
    "Ed25519": ("OKP", "Ed25519"),
}
EDDSA_NAMES = frozenset({"EdDSA", "Ed25519"})
_MIN_RSA_BITS = 2048
_PRIVATE_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})


class _Registry(JWSRegistry):
    """A JWS registry limited to an explicit allow-list.

    joserfc warns on every use of ``EdDSA`` (deprecated in favour of ``Ed25519`` by
    RFC 9864); both name the same Ed25519 signature here, so the warning is noise.
    """

    max_header_length = 2048

    def get_alg(self, name: str) -> JWSAlgModel:
        if name not in self.algorithms or not self.allowed or name not in self.allowed:
            raise UnsupportedAlgorithmError(f"Algorithm of '{name}' is not allowed")
        return self.algorithms[name]


def jws_registry(algorithms: Collection[str]) -> JWSRegistry:
    """A joserfc registry that allows exactly ``algorithms`` (never HMAC or none)."""
    return _Registry(algorithms=allowed_algorithms(algorithms), strict_check_header=False)


def allowed_algorithms(algorithms: Collection[str]) -> frozenset[str]:
    """Validate an allow-list; ``EdDSA`` and ``Ed25519`` imply each other."""
    if isinstance(algorithms, str):
        raise ConfigurationError(
            f"algorithms must be a collection of names, not the string {algorithms!r}",
            setting="algorithms",
        )
    names = set(algorithms)
    unsupported = sorted(names - _ALG_KEY_TYPES.keys())
    if unsupported:
        raise ConfigurationError(
            f"unsupported token algorithm(s) {', '.join(unsupported)}; choose from "
            f"{', '.join(sorted(_ALG_KEY_TYPES))} (HMAC and 'none' are never allowed)",
            setting="algorithms",
        )
    if not names:
        raise ConfigurationError("the algorithm allow-list is empty", setting="algorithms")
    if names & EDDSA_NAMES:
        names |= EDDSA_NAMES
    return frozenset(names)


def key_fits_algorithm(key: Key, alg: str) -> bool:
    """Whether ``key`` may verify (or sign) a JWS with header ``alg``.

    The key type and curve must be the ones the algorithm is defined for, a key's
    own ``alg`` (when it has one) must name the same algorithm, and RSA keys must
    have at least 2048 bits. This is what keeps an RSA public key from ever being
    used as an HMAC secret (RFC 8725 §2.1).
    """
    expected = _ALG_KEY_TYPES.get(alg)
    if expected is None:
        return False
    kty, curve = expected
    if key.key_type != kty:
        return False
    if isinstance(key, (ECKey, OKPKey)) and key.curve_name != curve:
        return False
    if isinstance(key, RSAKey) and key.public_key.key_size < _MIN_RSA_BITS:
        return False
    own = key.alg
    return not own or own == alg or (own in EDDSA_NAMES and alg in EDDSA_NAMES)


def _public_dict(jwk: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in jwk.items() if k not in _PRIVATE_MEMBERS}


class VerificationKeys:
    """A set of public keys of one issuer, looked up by ``kid`` (RFC 7515 §4.1.4).

    Built from a JWKS with :meth:`from_jwks`, which keeps only signature keys of the
    allowed algorithms and never keeps private members.
    """

    __slots__ = ("_by_kid", "_keys")

    def __init__(self, keys: Iterable[Key]) -> None:
        self._keys = tuple(keys)
        self._by_kid = {k.kid: k for k in self._keys if k.kid}

    @classmethod
    def from_jwks(
        cls,
        jwks: Mapping[str, Any] | KeySet,
        *,
        algorithms: Collection[str] = ALGORITHMS,
        source: str = "JWKS",
    ) -> VerificationKeys:
        """Import the usable keys of a JWK Set; raise ``ValueError`` if it is malformed.

        Skipped (logged at debug level): ``"use": "enc"`` keys, key types or ``alg``
        values outside the allow-list, RSA keys under 2048 bits, symmetric keys.
        """
        allowed = allowed_algorithms(algorithms)
        if isinstance(jwks, KeySet):
            members: list[Any] = [k.as_dict(private=False) for k in jwks]
        else:
            raw = jwks.get("keys") if isinstance(jwks, Mapping) else None
            if not isinstance(raw, list):
                raise ValueError(f"{source} has no 'keys' array")
            members = raw
        keys: list[Key] = []
        for index, member in enumerate(members):
            if not isinstance(member, Mapping):
                raise ValueError(f"{source} member {index} is not a JSON object")
            key = _import_public(member, allowed, f"{source} member {index}")
            if key is not None:
                keys.append(key)
        return cls(keys)

    def __contains__(self, kid: object) -> bool:
        return kid in self._by_kid

    def __len__(self) -> int:
        return len(self._keys)

    def kids(self) -> tuple[str, ...]:
        return tuple(self._by_kid)

    def find(self, *, issuer: str, kid: str | None, alg: str) -> Key:
        """The key named by ``kid``; without a ``kid``, the only key that fits ``alg``.

        A key found by ``kid`` is returned even when it does not fit ``alg``: the
        verifier rejects that pairing as an ``algorithm`` failure.
        """
        if kid is not None:
            key = self._by_kid.get(kid)
            if key is None:
                raise InvalidTokenError(
                    f"token key id {show_untrusted(kid)} is not among the keys of issuer "
                    f"{issuer!r} (known: {', '.join(self._by_kid) or 'none'}); the issuer "
                    "may have rotated its keys, or the token was not issued by it",
                    check="unknown_key",
                )
            return key
        fitting = [k for k in self._keys if key_fits_algorithm(k, alg)]
        if len(fitting) != 1:
            raise InvalidTokenError(
                f"token has no 'kid' header and issuer {issuer!r} has {len(fitting)} "
                f"{alg} keys; a token must name its key when the issuer has several",
                check="unknown_key",
            )
        return fitting[0]


class KeyResolver(Protocol):
    """Finds the public key that verifies a token of ``issuer``.

    ``resolve`` raises :class:`InvalidTokenError` with ``check="unknown_key"`` when the
    issuer has no such key, or :class:`IssuerUnreachableError` when its keys could
    not be fetched. ``known`` answers, without I/O, whether ``kid`` is still served
    (used to keep cached verifications honest after a key is withdrawn).
    """

    async def resolve(self, *, issuer: str, kid: str | None, alg: str) -> Key: ...

    def known(self, *, issuer: str, kid: str | None) -> bool: ...


class StaticKeys:
    """A :class:`KeyResolver` over fixed keys: ``StaticKeys({issuer: jwks_or_KeySet})``."""

    def __init__(
        self,
        keys: Mapping[str, Mapping[str, Any] | KeySet],
        *,
        algorithms: Collection[str] = ALGORITHMS,
    ) -> None:
        self._keys: dict[str, VerificationKeys] = {}
        for issuer, jwks in keys.items():
            try:
                self._keys[issuer] = VerificationKeys.from_jwks(
                    jwks, algorithms=algorithms, source=f"JWKS of issuer {issuer!r}"
                )
            except ValueError as exc:
                raise ConfigurationError(str(exc), setting="keys") from exc

    @property
    def issuers(self) -> tuple[str, ...]:
        return tuple(self._keys)

    async def resolve(self, *, issuer: str, kid: str | None, alg: str) -> Key:
        keys = self._keys.get(issuer)
        if keys is None:
            raise InvalidTokenError(
                f"issuer {issuer!r} has no configured keys", check="unknown_key"
            )
        return keys.find(issuer=issuer, kid=kid, alg=alg)

    def known(self, *, issuer: str, kid: str | None) -> bool:
        keys = self._keys.get(issuer)
        return keys is not None and kid is not None and kid in keys


def _import_public(member: Mapping[str, Any], allowed: frozenset[str], where: str) -> Key | None:
    use = member.get("use")
    kty = member.get("kty")
    alg = member.get("alg")
    if use is not None and use != "sig":
        logger.debug("skipping %s: use %r is not 'sig'", where, use)
        return None
    if kty not in ("EC", "RSA", "OKP"):
        logger.debug("skipping %s: key type %r is not EC, RSA or OKP", where, kty)
        return None
    if alg is not None and alg not in allowed:
        logger.debug("skipping %s: alg %r is not allowed", where, alg)
        return None
    if kty == "RSA" and _rsa_bits(member.get("n")) < _MIN_RSA_BITS:
        logger.debug("skipping %s: RSA key shorter than %d bits", where, _MIN_RSA_BITS)
        return None
    try:
        key = import_jwk(_public_dict(member))
    except (JoseError, ValueError, TypeError, KeyError) as exc:
        raise ValueError(f"{where} is not a valid {kty} key: {exc}") from exc
    if not any(key_fits_algorithm(key, a) for a in allowed):
        logger.debug("skipping %s: no allowed algorithm fits this key", where)
        return None
    return key


_KEY_CLASSES: dict[str, type[ECKey] | type[RSAKey] | type[OKPKey]] = {
    "EC": ECKey,
    "RSA": RSAKey,
    "OKP": OKPKey,
}


def _rsa_bits(modulus: object) -> int:
    """Bit length of a base64url RSA modulus (0 when it is not one)."""
    if not isinstance(modulus, str):
        return 0
    try:
        raw = base64.urlsafe_b64decode(modulus + "=" * (-len(modulus) % 4))
    except ValueError:
        return 0
    return int.from_bytes(raw, "big").bit_length()


def import_jwk(data: Mapping[str, Any]) -> Key:
    """Import a JWK dict of type EC, RSA or OKP (KeyError for any other ``kty``)."""
    key: Key = _KEY_CLASSES[str(data.get("kty"))].import_key(dict(data))
    return key


def show_untrusted(value: object, limit: int = 80) -> str:
    """A value from an untrusted token, quoted and bounded for a message."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _generate_private(alg: str) -> Key:
    key: Key
    if alg == "ES256":
        key = ECKey.generate_key("P-256")
    elif alg == "EdDSA":
        key = OKPKey.generate_key("Ed25519")
    elif alg == "RS256":
        key = RSAKey.generate_key(3072)
    else:
        raise ConfigurationError(
            f"cannot sign with {alg!r}; choose one of {', '.join(ALGORITHMS)}", setting="alg"
        )
    return key


class SigningKey:
    """One private signing key and its metadata.

    ``kid`` is the RFC 7638 thumbprint of the public key. ``retired_at`` is set when
    rotation replaced this key: it no longer signs, but its public key stays
    published until tokens it signed have expired. The repr never shows key material.
    """

    __slots__ = ("_headers", "_key", "_signer", "alg", "created_at", "kid", "retired_at")

    def __init__(
        self, key: Key, *, alg: str, created_at: int, retired_at: int | None = None
    ) -> None:
        if alg not in ALGORITHMS:
            raise ConfigurationError(
                f"cannot sign with {alg!r}; choose one of {', '.join(ALGORITHMS)}",
                setting="alg",
            )
        if not key.is_private:
            raise ConfigurationError("a signing key needs the private key, got a public one")
        if not key_fits_algorithm(key, alg):
            raise ConfigurationError(f"a {key.key_type} key cannot sign {alg} tokens")
        key.ensure_kid()
        self._key = key
        self.alg = alg
        self.kid: str = key.kid or key.thumbprint()
        self.created_at = created_at
        self.retired_at = retired_at
        #: ``typ`` -> the encoded header segment and its dot (see :meth:`sign`).
        self._headers: dict[str, bytes] = {}
        self._signer: Callable[[bytes], bytes] | None = None

    @classmethod
    def generate(cls, alg: str = "ES256", *, clock: Callable[[], float] = time.time) -> SigningKey:
        """A fresh key (P-256 for ES256, Ed25519 for EdDSA, 3072-bit RSA for RS256)."""
        return cls(_generate_private(alg), alg=alg, created_at=int(clock()))

    @classmethod
    def from_jwk(
        cls,
        jwk: Mapping[str, Any],
        *,
        alg: str | None = None,
        created_at: int = 0,
        retired_at: int | None = None,
    ) -> SigningKey:
        """Import a private JWK (``alg`` defaults to the JWK's own ``alg``)."""
        kty = jwk.get("kty")
        if kty not in _KEY_CLASSES:
            raise ConfigurationError(f"unsupported private key type {kty!r}; use EC, OKP or RSA")
        try:
            key = import_jwk(jwk)
        except (JoseError, ValueError, TypeError, KeyError) as exc:
            raise ConfigurationError(f"invalid private {kty} JWK: {type(exc).__name__}") from exc
        chosen = alg or jwk.get("alg")
        if not isinstance(chosen, str):
            raise ConfigurationError("the JWK has no 'alg'; pass alg=")
        return cls(key, alg=chosen, created_at=created_at, retired_at=retired_at)

    def sign(self, claims: Mapping[str, Any], *, typ: str) -> str:
        """A compact JWS over ``claims`` with header ``{alg, kid, typ}``.

        What ``joserfc.jwt.encode`` produces, byte for byte; the header is checked and
        encoded once per ``typ`` and the key's checks run once (the first signature), so a
        signature costs the JSON of the claims and the ``cryptography`` signing call.
        """
        prefix = self._headers.get(typ) if isinstance(typ, str) else None
        if prefix is None:
            if not isinstance(typ, str):  # joserfc refuses it, as it always did
                header = {"alg": self.alg, "kid": self.kid, "typ": typ}
                return jwt.encode(
                    header, dict(claims), self._key, registry=_sign_registry(self.alg)
                )
            prefix = self._header_segment(typ)
        signer = self._signer if self._signer is not None else self._prepare_signer()
        signing_input = prefix + _b64(_claims_json(claims))
        return (signing_input + b"." + _b64(signer(signing_input))).decode("ascii")

    def _header_segment(self, typ: str) -> bytes:
        # The header joserfc's jwt.encode builds ("typ" first), checked by its registry.
        header = {"typ": typ, "alg": self.alg, "kid": self.kid}
        _sign_registry(self.alg).check_header(header)
        prefix = _b64(json.dumps(header, ensure_ascii=True, separators=(",", ":")).encode()) + b"."
        if len(self._headers) < 16:
            self._headers[typ] = prefix
        return prefix

    def _prepare_signer(self) -> Callable[[bytes], bytes]:
        """joserfc's checks of the key for ``alg`` (use, type, its own alg, key_ops), once."""
        model = _sign_registry(self.alg).get_alg(self.alg)
        model.check_key(self._key)
        private = self._key.get_op_key("sign")
        signer: Callable[[bytes], bytes]
        if self.alg == "ES256" and isinstance(private, ec.EllipticCurvePrivateKey):
            signer = _es256_signer(private)
        else:  # EdDSA and RS256: joserfc's call is already the bare cryptography one
            key = self._key

            def signer(signing_input: bytes) -> bytes:
                return model.sign(signing_input, key)

        self._signer = signer
        return signer

    def public_jwk(self) -> dict[str, Any]:
        """The public JWK with ``kid``, ``alg`` and ``use="sig"``; no private members."""
        jwk = _public_dict(self._key.as_dict(private=False))
        jwk.update(kid=self.kid, alg=self.alg, use="sig")
        return jwk

    def thumbprint(self) -> str:
        """The RFC 7638 SHA-256 thumbprint of the public key (``kid`` unless imported
        from a JWK that named itself otherwise)."""
        return self._key.thumbprint()

    @property
    def key(self) -> Key:
        """The joserfc key (private); it can also verify this key's signatures."""
        return self._key

    def to_json(self) -> dict[str, Any]:
        """The persisted form, including the private key: store it 0600, never log it."""
        return {
            "kid": self.kid,
            "alg": self.alg,
            "created_at": self.created_at,
            "retired_at": self.retired_at,
            "jwk": self._key.as_dict(private=True),
        }

    def __repr__(self) -> str:
        retired = "" if self.retired_at is None else f", retired_at={self.retired_at}"
        return (
            f"SigningKey(kid={self.kid!r}, alg={self.alg!r}, created_at={self.created_at}{retired})"
        )


def _b64(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


def _claims_json(claims: Mapping[str, Any]) -> bytes:
    """The JWT payload as joserfc encodes it: compact UTF-8 JSON, datetimes in the time
    claims turned into NumericDates (RFC 7519 §2)."""
    payload = dict(claims)
    for name in ("exp", "iat", "nbf"):
        value = payload.get(name)
        if isinstance(value, datetime):
            payload[name] = calendar.timegm(value.utctimetuple())
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


_ES256 = ec.ECDSA(hashes.SHA256())


def _es256_signer(private: ec.EllipticCurvePrivateKey) -> Callable[[bytes], bytes]:
    """ES256 (RFC 7518 §3.4): the DER signature re-encoded as 32-byte R || 32-byte S."""

    def sign(signing_input: bytes) -> bytes:
        r, s = decode_dss_signature(private.sign(signing_input, _ES256))
        return r.to_bytes(32, "big") + s.to_bytes(32, "big")

    return sign


_SIGN_REGISTRIES: dict[str, JWSRegistry] = {}


def _sign_registry(alg: str) -> JWSRegistry:
    registry = _SIGN_REGISTRIES.get(alg)
    if registry is None:
        registry = _SIGN_REGISTRIES[alg] = jws_registry((alg,))
    return registry


def _check_private_mode(path: Path, *, is_dir: bool) -> None:
    """Refuse a key directory or file that another user could read, write or replace.

    The directory must be ours and closed to group and others (0700): with write access
    (or 0755 and a foreign owner) someone else could swap in a key of their choosing, and
    a listing tells which keys exist. A key file must be ours, mode 0600, and not a
    symbolic link (which could point anywhere).
    """
    if os.name != "posix":
        return
    what = "key directory" if is_dir else "key file"
    st = path.stat() if is_dir else path.lstat()
    if not is_dir and stat.S_ISLNK(st.st_mode):
        raise ConfigurationError(
            f"{what} {path} is a symbolic link; replace it with the file itself",
            setting="directory",
        )
    uid = os.geteuid()
    if st.st_uid != uid:
        raise ConfigurationError(
            f"{what} {path} belongs to user id {st.st_uid}, not to the user running this "
            f"process (id {uid}); run: chown {uid} {path} (or run as its owner)",
            setting="directory",
        )
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o077:
        want = "700" if is_dir else "600"
        access = "open" if is_dir else "readable or writable"
        raise ConfigurationError(
            f"{what} {path} is {access} to other users (mode {mode:o}); run: chmod {want} {path}",
            setting="directory",
        )


class KeyStore:
    """Signing keys kept in a directory (created 0700, one JSON file per key, 0600).

    ``directory=None`` keeps keys in memory only. ``retention`` is how long a
    retired key's public half stays published: set it to the longest lifetime of a
    token you sign, so tokens signed before a rotation verify until they expire.
    Synchronous (see the module docstring); safe to share between threads.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str] | None,
        *,
        alg: str = "ES256",
        clock: Callable[[], float] = time.time,
        retention: float = 3600.0,
    ) -> None:
        if alg not in ALGORITHMS:
            raise ConfigurationError(
                f"cannot sign with {alg!r}; choose one of {', '.join(ALGORITHMS)}",
                setting="alg",
            )
        if retention < 0:
            raise ConfigurationError("retention must be >= 0 seconds", setting="retention")
        self._alg = alg
        self._clock = clock
        self._retention = retention
        self._lock = threading.RLock()
        self._keys: list[SigningKey] = []
        self._verification: tuple[tuple[SigningKey, ...], VerificationKeys] | None = None
        self._resolvers: dict[str, KeyResolver] = {}
        self._directory = None if directory is None else Path(directory)
        if self._directory is not None:
            self._open_directory(self._directory)

    @property
    def directory(self) -> Path | None:
        return self._directory

    @property
    def retention(self) -> float:
        return self._retention

    def _open_directory(self, directory: Path) -> None:
        if not directory.exists():
            directory.mkdir(mode=0o700, parents=True)
            directory.chmod(0o700)
        elif not directory.is_dir():
            raise ConfigurationError(
                f"key store path {directory} is not a directory", setting="directory"
            )
        _check_private_mode(directory, is_dir=True)
        for path in sorted(directory.glob("*.json")):
            _check_private_mode(path, is_dir=False)
            self._keys.append(self._load_file(path))
        self._keys.sort(key=lambda k: k.created_at)

    @staticmethod
    def _load_file(path: Path) -> SigningKey:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            key = SigningKey.from_jwk(
                data["jwk"],
                alg=data["alg"],
                created_at=int(data["created_at"]),
                retired_at=None if data.get("retired_at") is None else int(data["retired_at"]),
            )
        except (OSError, ValueError, TypeError, KeyError, ConfigurationError) as exc:
            raise ConfigurationError(
                f"key file {path} is unreadable or corrupt ({type(exc).__name__}); "
                "move it away to let a new key be generated",
                setting="directory",
            ) from exc
        if key.kid != path.stem:
            raise ConfigurationError(
                f"key file {path} holds key {key.kid!r}, not the one its name says; "
                "rename or remove it",
                setting="directory",
            )
        return key

    def _persist(self, key: SigningKey) -> None:
        if self._directory is None:
            return
        path = self._directory / f"{key.kid}.json"
        tmp = path.with_name(path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            if os.name == "posix":
                os.fchmod(fd, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump(key.to_json(), fh)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        os.replace(tmp, path)

    def _current_locked(self) -> SigningKey | None:
        active = [k for k in self._keys if k.retired_at is None and k.alg == self._alg]
        return active[-1] if active else None

    @property
    def current(self) -> SigningKey:
        """The key that signs now, generated (and persisted) on first use."""
        with self._lock:
            key = self._current_locked()
            if key is None:
                key = self._rotate_locked()
            return key

    def rotate(self) -> SigningKey:
        """Make a new current key; the old one gets ``retired_at`` = now and is kept."""
        with self._lock:
            return self._rotate_locked()

    def _rotate_locked(self) -> SigningKey:
        now = int(self._clock())
        new = SigningKey.generate(self._alg, clock=self._clock)
        self._persist(new)
        for old in self._keys:
            if old.retired_at is None:
                old.retired_at = now
                self._persist(old)
        self._keys.append(new)
        logger.info("signing key %s (%s) is now current", new.kid, new.alg)
        return new

    def published(self) -> tuple[SigningKey, ...]:
        """Keys whose public half is served: active ones and those retired < retention ago."""
        with self._lock:
            if self._current_locked() is None:
                self._rotate_locked()
            now = self._clock()
            return tuple(
                k
                for k in self._keys
                if k.retired_at is None or now < k.retired_at + self._retention
            )

    def verification_keys(self) -> VerificationKeys:
        """The published keys as a :class:`VerificationKeys`, rebuilt only when they change."""
        published = self.published()
        cached = self._verification
        if cached is None or cached[0] != published:
            cached = self._verification = (published, VerificationKeys(k.key for k in published))
        return cached[1]

    def public_jwks(self) -> dict[str, Any]:
        """``{"keys": [...]}``: the current key and retired keys still within retention."""
        return {"keys": [k.public_jwk() for k in reversed(self.published())]}

    def prune(self) -> None:
        """Forget retired keys past retention, and delete their files."""
        with self._lock:
            now = self._clock()
            keep: list[SigningKey] = []
            for key in self._keys:
                if key.retired_at is not None and now >= key.retired_at + self._retention:
                    if self._directory is not None:
                        (self._directory / f"{key.kid}.json").unlink(missing_ok=True)
                    logger.info("pruned retired signing key %s", key.kid)
                else:
                    keep.append(key)
            self._keys = keep

    def resolver(self, issuer: str) -> KeyResolver:
        """A key resolver serving this store's published keys for tokens of ``issuer``."""
        resolver = self._resolvers.get(issuer)
        if resolver is None:
            resolver = _KeyStoreResolver(self, issuer)
            if len(self._resolvers) < 8:
                self._resolvers[issuer] = resolver
        return resolver

    def __repr__(self) -> str:
        where = "memory" if self._directory is None else str(self._directory)
        return f"KeyStore({where}, alg={self._alg!r}, keys={len(self._keys)})"


class _KeyStoreResolver:
    """Serves the public keys a :class:`KeyStore` publishes, for one issuer."""

    __slots__ = ("_issuer", "_store")

    def __init__(self, store: KeyStore, issuer: str) -> None:
        self._store = store
        self._issuer = issuer

    def _keys(self, issuer: str) -> VerificationKeys:
        if issuer != self._issuer:
            raise InvalidTokenError(
                f"issuer {issuer!r} is not served by this key store (it serves {self._issuer!r})",
                check="issuer",
            )
        return self._store.verification_keys()

    async def resolve(self, *, issuer: str, kid: str | None, alg: str) -> Key:
        return self._keys(issuer).find(issuer=issuer, kid=kid, alg=alg)

    def known(self, *, issuer: str, kid: str | None) -> bool:
        if issuer != self._issuer or kid is None:
            return False
        return any(k.kid == kid for k in self._store.published())
