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
            "`Authorization: Bearer <key>`, or the `username`/`password` or `api_key` body fields."
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
                        "description": "A retry with the same key gets the same callback id.",
                        "schema": {"type": "string", "minLength": 1, "maxLength": 128},
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
                        "content": {
                            "application/json": {"schema": {"$ref": "#/components/schemas/CallbackAccepted"}}
                        },
                    },
                    "401": _error_response("Missing or wrong credentials"),
                    "403": _error_response("The user may not use callback (disabled or blocked)"),
                    "422": _error_response("Malformed JSON or invalid fields"),
                    "429": {
                        **_error_response("Rate limit (per user or per number) exceeded"),
                        "headers": {
                            "Retry-After": {"schema": {"type": "integer"}, "description": "seconds to wait"}
                        },
                    },
                    "503": _error_response("The pipeline is unavailable (Kafka did not take the request)"),
                },
            }
        },
        "/healthz": {
            "get": {
                "operationId": "health",
                "summary": "Liveness",
                "responses": {"200": {"description": "up"}},
            }
        },
        "/openapi.json": {
            "get": {
                "operationId": "openapi",
                "summary": "This document",
                "responses": {"200": {"description": "OpenAPI document"}},
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
                        "description": "number to call back (leg A), E.164 digits, '+' allowed",
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
