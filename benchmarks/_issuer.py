"""A user-token issuer for the benchmarks: one ES256 key, tokens as RFC 9068 ``at+jwt``."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any

from joserfc import jwt
from joserfc.jwk import ECKey

ISSUER = "https://issuer.bench.example"


class BenchIssuer:
    def __init__(self, *, kid: str = "bench-key") -> None:
        self.kid = kid
        self.key = ECKey.generate_key("P-256", parameters={"kid": kid}, private=True)

    def jwks(self) -> dict[str, Any]:
        return {"keys": [self.key.as_dict(private=False)]}

    def write_jwks(self, directory: Path) -> Path:
        path = directory / "jwks.json"
        path.write_text(json.dumps(self.jwks()), encoding="utf-8")
        return path

    def token(self, *, aud: str, sub: str = "alice", lifetime: int = 3600, **extra: Any) -> str:
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": ISSUER,
            "sub": sub,
            "aud": aud,
            "iat": now,
            "exp": now + lifetime,
            "jti": uuid.uuid4().hex,
            "scope": "echo",
            **extra,
        }
        header = {"alg": "ES256", "kid": self.kid, "typ": "at+jwt"}
        return jwt.encode(header, claims, self.key, algorithms=["ES256"])
