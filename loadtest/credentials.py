"""Per-caller credentials: a static token, one token per caller from a file, or a JWT minted per caller.

The token is the session variable `{token}`: the profile places it in the handshake (auth, a header, a
query parameter) or in a request. Secrets are read once when the run starts; no token or secret is ever
written to a run's files or logs (`redact` is what every printer uses).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from loadtest.profile import CredentialSpec, ProfileError, SignalingProfile, fill

# Where the run's static token travels to child processes (locust): the environment, not argv.
AUTH_TOKEN_ENV = "SPEECHLOAD_AUTH_TOKEN"
SECRET_KEYS = ("token", "secret", "password", "credential", "authorization", "access_token", "api_key",
               "apikey", "jwt")


@dataclass(frozen=True)
class Credentials:
    """How one run's callers authenticate (built once per run from the profile and the run config)."""

    kind: str = "none"
    static: str = field(default="", repr=False)
    tokens: tuple[str, ...] = field(default=(), repr=False)
    secret: str = field(default="", repr=False)
    algorithm: str = "HS256"
    claims: dict[str, Any] = field(default_factory=dict)
    ttl_s: float = 3600.0

    def token(self, caller: int, variables: dict[str, Any]) -> str:
        """The token of caller number `caller` whose session variables (room, peer, role …) are given."""
        if self.kind == "static":
            return self.static
        if self.kind == "file":
            return self.tokens[caller % len(self.tokens)]
        if self.kind == "jwt":
            import jwt  # PyJWT: only runs that mint tokens pay for the import

            now = int(time.time())
            claims = {"iat": now, "exp": now + int(self.ttl_s),
                      **fill(self.claims, variables, "credentials.claims")}
            return jwt.encode(claims, self.secret, algorithm=self.algorithm)
        return ""

    def secrets(self) -> tuple[str, ...]:
        """Every secret value this run knows, for redaction."""
        return tuple(s for s in (self.static, self.secret, *self.tokens) if s)


def credentials_for(profile: SignalingProfile, auth_token: str = "") -> Credentials:
    """The run's credentials from its profile (and the run config's static token, which wins)."""
    base_dir = Path(profile.base_dir) if profile.base_dir else None
    return load_credentials(profile.credentials, auth_token, base_dir)


def load_credentials(spec: CredentialSpec, auth_token: str = "", base_dir: Path | None = None) -> Credentials:
    """The run's credentials; `auth_token` (the run config's `[target] auth_token`) is a static token that
    wins over the profile's. Errors name the profile key."""
    if auth_token:
        return Credentials("static", static=auth_token)
    if spec.kind == "static":
        return Credentials("static", static=spec.token)
    if spec.kind == "file":
        path = Path(spec.path)
        if not path.is_absolute() and base_dir is not None:
            path = base_dir / path
        try:
            lines = [line.strip() for line in path.read_text().splitlines()]
        except OSError as exc:
            raise ProfileError(f"'credentials.path': cannot read {path}: {exc.strerror or exc}") from None
        tokens = tuple(line for line in lines if line and not line.startswith("#"))
        if not tokens:
            raise ProfileError(f"'credentials.path': {path} holds no token (one per line)")
        return Credentials("file", tokens=tokens)
    if spec.kind == "jwt":
        secret = spec.secret
        if spec.secret_env:
            secret = os.environ.get(spec.secret_env, "")
            if not secret:
                raise ProfileError(f"'credentials.secret_env': environment variable {spec.secret_env} "
                                   "is not set")
        return Credentials("jwt", secret=secret, algorithm=spec.algorithm, claims=dict(spec.claims),
                           ttl_s=spec.ttl_s)
    return Credentials()


def redact(value: Any, secrets: tuple[str, ...] = (), key: str = "") -> Any:
    """`value` with every secret replaced by "***": values under secret-sounding keys, and any string
    holding one of `secrets` (a token inside a URL's query, say)."""
    if isinstance(value, dict):
        return {k: redact(v, secrets, str(k)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact(v, secrets, key) for v in value]
    if isinstance(value, str):
        lowered = key.lower().replace("-", "_")
        if value and any(word in lowered for word in SECRET_KEYS):
            return "***"
        for secret in secrets:
            if secret and secret in value:
                value = value.replace(secret, "***")
        return value
    return value
