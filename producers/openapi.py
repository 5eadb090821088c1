"""The OpenAPI 3.1 document of the web callback API, written by hand so it says what clients need.

Served at ``GET /openapi.json`` and committed as ``docs/openapi.json``
(``callback web --export-openapi docs/openapi.json``); a unit test keeps the two equal.
"""

from __future__ import annotations

import json
from typing import Any

_ERROR = {"$ref": "#/components/schemas/Error"}


def _error_response(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ERROR}}}


def _with_retry_after(response: dict[str, Any]) -> dict[str, Any]:
    return {
        **response,
        "headers": {"Retry-After": {"schema": {"type": "integer"}, "description": "seconds to wait"}},
    }


#: any path answers a method it does not take with 405 and the ``Allow`` header, as JSON
_METHOD_NOT_ALLOWED = {
    **_error_response("Method not allowed on this path (JSON Error, code `method_not_allowed`)"),
    "headers": {"Allow": {"schema": {"type": "string"}, "description": "the methods the path takes"}},
}


OPENAPI: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {
        "title": "Callback web API",
        "version": "1.0.0",
        "description": (
            "The seed's WEB callback: ask the platform to call a number back. The request is checked and "
            "published to the `callback.requests` Kafka topic; the callback itself (leg A, authentication, "
            "leg B) happens asynchronously, so the answer is `202 Accepted` with the callback id.\n\n"
            "Authenticate with HTTP Basic (web username and password), an API key in `X-API-Key` or "
            "`Authorization: Bearer <key>`, or the `username`/`password` or `api_key` body fields. "
            "Wrong passwords are limited per username and per client address (429 with "
            "`Retry-After`, also for the right password until it passes).\n\n"
            "Every error, whatever its status, is a JSON `Error` body."
        ),
    },
    "paths": {
        "/v1/callbacks": {
            "post": {
                "operationId": "requestCallback",
                "summary": "Request a callback",
                "security": [{"basic": []}, {"apiKey": []}, {"bearer": []}, {}],
                "parameters": [
                    {
                        "name": "Idempotency-Key",
                        "in": "header",
                        "required": False,
                        "description": (
                            "Makes retries safe: a request with the same key and the same body (number "
                            "and destination) gets the first answer again (202, same callback id, header "
                            "`Idempotent-Replayed: true`) and is not published again nor counted by the "
                            "rate limits; the same key with another body is a 409. Keys are per user, "
                            "remembered for 24 h (at most 20,000 of them)."
                        ),
                        "schema": {"type": "string", "minLength": 1, "maxLength": 128, "pattern": "^[ -~]+$"},
                    }
                ],
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {"schema": {"$ref": "#/components/schemas/CallbackRequest"}}
                    },
                },
                "responses": {
                    "202": {
                        "description": "Accepted: the initiation is on callback.requests",
                        "headers": {
                            "Idempotent-Replayed": {
                                "schema": {"const": "true"},
                                "description": "present when this is the answer to an earlier request "
                                "with the same Idempotency-Key",
                            }
                        },
                        "content": {
                            "application/json": {"schema": {"$ref": "#/components/schemas/CallbackAccepted"}}
                        },
                    },
                    "401": _error_response("Missing or wrong credentials"),
                    "403": _error_response("The user may not use callback (disabled or blocked)"),
                    "405": _METHOD_NOT_ALLOWED,
                    "409": _error_response(
                        "The Idempotency-Key was already used with a different body "
                        "(code `idempotency_key_reused`)"
                    ),
                    "413": _error_response("The body is larger than 64 KiB (code `body_too_large`)"),
                    "422": _error_response(
                        "Malformed JSON or JSON nested too deeply (`malformed_json`), invalid fields "
                        "(`invalid_request`), or a callback number that is not called back "
                        "(`number_not_allowed`: shorter than the minimum, 6 digits by default, or an "
                        "emergency number such as 112, 911 or 999, alone or after a country code)"
                    ),
                    "429": _with_retry_after(
                        _error_response(
                            "Rate limit exceeded: requests per user or per number (`rate_limited`), or "
                            "wrong passwords per username or per client address (`too_many_failed_logins`)"
                        )
                    ),
                    "503": _with_retry_after(
                        _error_response(
                            "The pipeline is unavailable: Kafka did not take the request (`unavailable`), "
                            "or too many password checks are under way (`busy`, with Retry-After)"
                        )
                    ),
                },
            }
        },
        "/healthz": {
            "get": {
                "operationId": "health",
                "summary": "Liveness",
                "responses": {"200": {"description": "up"}, "405": _METHOD_NOT_ALLOWED},
            }
        },
        "/openapi.json": {
            "get": {
                "operationId": "openapi",
                "summary": "This document",
                "responses": {"200": {"description": "OpenAPI document"}, "405": _METHOD_NOT_ALLOWED},
            }
        },
    },
    "components": {
        "securitySchemes": {
            "basic": {"type": "http", "scheme": "basic"},
            "bearer": {"type": "http", "scheme": "bearer", "description": "the API key"},
            "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
        },
        "schemas": {
            "CallbackRequest": {
                "type": "object",
                "additionalProperties": False,
                "required": ["callback_number"],
                "properties": {
                    "callback_number": {
                        "type": "string",
                        "pattern": r"^\+?[0-9]{1,20}$",
                        "description": (
                            "number to call back (leg A), E.164 digits, '+' allowed; at least 6 digits "
                            "(configurable) and never an emergency number"
                        ),
                    },
                    "destination": {
                        "type": "string",
                        "pattern": r"^\+?[0-9]{1,20}$",
                        "description": "leg B number when known up front; else asked by the IVR",
                    },
                    "username": {"type": "string", "maxLength": 200},
                    "password": {"type": "string", "maxLength": 1024},
                    "api_key": {"type": "string", "maxLength": 1024},
                },
            },
            "CallbackAccepted": {
                "type": "object",
                "required": ["callback_id", "status"],
                "properties": {"callback_id": {"type": "string"}, "status": {"const": "accepted"}},
            },
            "Error": {
                "type": "object",
                "required": ["error", "message"],
                "properties": {
                    "error": {"type": "string", "description": "stable machine-readable code"},
                    "message": {"type": "string"},
                    "fields": {
                        "type": "object",
                        "additionalProperties": {"type": "string"},
                        "description": "per-field problems (422)",
                    },
                },
            },
        },
    },
}


def render_openapi() -> str:
    return json.dumps(OPENAPI, indent=2, sort_keys=True) + "\n"
