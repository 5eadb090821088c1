"""Web API credentials: what ``callback web`` checks a login against.

They are not reference data. ``config.users`` is read by the rater, the processors and other
teams; the password hashes and API-key digests travel instead on ``auth.web_credentials``
(``schemas.topics``), a compacted topic keyed by user id that only the web API reads and only
``callback config load`` writes, so a carrier can close it to everyone else with Kafka ACLs
(docs/architecture.md, "Credentials").

A carrier file still writes the credentials on the user entry (``WebLogin``'s three fields); the
loader splits them off (``schemas.carrier_config``). Every user of a loaded file gets a record here,
all fields None when the user has no web access, so removing a user's credentials from the file
and loading it again revokes them.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import ConfigDict, Field, field_validator, model_validator

from schemas.envelope import Record
from schemas.reference import EntityId

#: the most pbkdf2 rounds a stored hash may ask for (a hash is checked per login attempt)
PBKDF2_MAX_ITERATIONS = 2_000_000

PasswordHash = Annotated[
    str,
    Field(
        pattern=r"^pbkdf2_sha256\$[1-9][0-9]{0,6}\$[^$]+\$[0-9a-fA-F]{64}$",
        # the published schema says the iterations' bound (_iterations_in_range) in its pattern
        json_schema_extra={
            "pattern": r"^pbkdf2_sha256\$(?:[1-9][0-9]{0,5}|1[0-9]{6}|2000000)\$[^$]+\$[0-9a-fA-F]{64}$"
        },
        description="pbkdf2_sha256$<iterations>$<salt>$<hex digest>; 1 to 2,000,000 iterations",
    ),
]
ApiKeyDigest = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$", description="hex SHA-256 of the API key")]
WebUsername = Annotated[str, Field(min_length=1, max_length=200)]


class WebLogin(Record):
    """How a user logs in to the web API: a username and password hash, an API key, both or none."""

    #: ``_password_needs_a_username`` as JSON Schema
    model_config = ConfigDict(
        json_schema_extra={
            "if": {
                "required": ["web_password_hash"],
                "properties": {"web_password_hash": {"type": "string"}},
            },
            "then": {"required": ["web_username"], "properties": {"web_username": {"type": "string"}}},
        }
    )

    web_username: WebUsername | None = None
    web_password_hash: PasswordHash | None = None
    api_key_sha256: ApiKeyDigest | None = None

    @field_validator("web_password_hash")
    @classmethod
    def _iterations_in_range(cls, v: str | None) -> str | None:
        if v is not None and int(v.split("$")[1]) > PBKDF2_MAX_ITERATIONS:
            raise ValueError(f"more than {PBKDF2_MAX_ITERATIONS:,} pbkdf2 iterations")
        return v

    @model_validator(mode="after")
    def _password_needs_a_username(self) -> WebLogin:
        if self.web_password_hash is not None and not self.web_username:
            raise ValueError("web_password_hash without a web_username: nobody could log in with it")
        return self


class WebCredentials(WebLogin):
    """Value of ``auth.web_credentials``, keyed by ``user_id``: the web login of one user of
    ``config.users``. Every field None means the user may not log in to the web API."""

    user_id: EntityId
