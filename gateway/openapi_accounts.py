"""OpenAPI part: sign-up, sign-in, devices (tokens), the profile, a change of number
and the authentication log (gateway.api_accounts)."""

from __future__ import annotations

from typing import Any

from gateway.openapi_support import (
    BODY_RULES,
    CURSOR,
    DATE_TIME,
    LIMIT,
    PROBLEM,
    TOO_LARGE_JSON,
    json_body,
    json_response,
    page,
    ref,
)

RATE_LIMITED = {
    "description": (
        "Too many code requests or code attempts (per mobile number or per client IP, "
        "within auth.window_s); try again after Retry-After seconds"
    ),
    "headers": {
        "Retry-After": {
            "required": True,
            "description": "Whole seconds until a request may succeed",
            "schema": {"type": "string", "pattern": "^[1-9][0-9]*$"},
        }
    },
    "content": {"application/problem+json": {"schema": ref("Problem")}},
}
UNAVAILABLE = {
    **PROBLEM,
    "description": "The code could not be sent (the verification is void), or the rate "
    "limiter's store is unreachable; try again shortly",
}
BAD_CODE = {
    **PROBLEM,
    "description": (
        "Malformed body or fields, or a wrong code (the detail says how many attempts "
        "are left; after auth.code_attempts wrong ones the code is void)"
    ),
}
NO_VERIFICATION = {
    **PROBLEM,
    "description": "No such verification (unknown id, or one that is not for this use)",
}
GONE = {
    **PROBLEM,
    "description": "The code expired, was used already, or had too many wrong attempts: "
    "request a new one",
}
TOKEN_ID = {
    "name": "token_id",
    "in": "path",
    "required": True,
    "description": "A token's `id`, or `current` for the token of this request",
    "schema": {"type": "string"},
}
CODE_SENT = json_response(
    "A code is on its way (the same answer whether or not the number has an account)",
    "Verification",
)
_PHONE = {"type": "string", "minLength": 1, "maxLength": 64, "description": "A mobile number"}
_NAME = {"type": "string", "minLength": 1, "maxLength": 100}
_DATE = {"type": "string", "format": "date", "description": "YYYY-MM-DD"}


def _public(operation: dict[str, Any]) -> dict[str, Any]:
    return {**operation, "security": []}


def paths() -> dict[str, Any]:
    return {
        "/auth/signup": {
            "post": _public(
                {
                    "operationId": "signUp",
                    "summary": "Ask for a code to create an account",
                    "description": (
                        "Sends a 6-digit code by SMS to `phone`; confirm it with "
                        "`POST /auth/verify`. A number that already has an account gets a "
                        "code too, which then signs in to that account (the form is "
                        "discarded). " + BODY_RULES
                    ),
                    "requestBody": json_body("SignupRequest"),
                    "responses": {
                        "202": CODE_SENT,
                        "400": PROBLEM,
                        "413": TOO_LARGE_JSON,
                        "429": RATE_LIMITED,
                        "503": UNAVAILABLE,
                    },
                }
            )
        },
        "/auth/login": {
            "post": _public(
                {
                    "operationId": "logIn",
                    "summary": "Ask for a code to sign in",
                    "description": (
                        "Sends a 6-digit code by SMS to the account's mobile number. A "
                        "number without an account is answered exactly alike (no SMS is "
                        "sent and the verification can never succeed). " + BODY_RULES
                    ),
                    "requestBody": json_body("LoginRequest"),
                    "responses": {
                        "202": CODE_SENT,
                        "400": PROBLEM,
                        "413": TOO_LARGE_JSON,
                        "429": RATE_LIMITED,
                        "503": UNAVAILABLE,
                    },
                }
            )
        },
        "/auth/verify": {
            "post": _public(
                {
                    "operationId": "verifyCode",
                    "summary": "Confirm a code: creates the account or signs in",
                    "description": "Answers a new bearer token for `device`. " + BODY_RULES,
                    "requestBody": json_body("VerifyRequest"),
                    "responses": {
                        "201": json_response("Signed in", "SignedIn"),
                        "400": BAD_CODE,
                        "403": {**PROBLEM, "description": "The account is suspended"},
                        "404": NO_VERIFICATION,
                        "410": GONE,
                        "413": TOO_LARGE_JSON,
                        "429": RATE_LIMITED,
                        "503": UNAVAILABLE,
                    },
                }
            )
        },
        "/tokens": {
            "get": {
                "operationId": "listTokens",
                "summary": "Signed-in devices (one token each), newest first",
                "parameters": [LIMIT, CURSOR],
                "responses": {
                    "200": json_response("One page", "TokenPage"),
                    "400": PROBLEM,
                    "401": PROBLEM,
                },
            }
        },
        "/tokens/{token_id}": {
            "delete": {
                "operationId": "revokeToken",
                "summary": "Sign a device out (`current`: sign out of this one)",
                "parameters": [TOKEN_ID],
                "responses": {
                    "204": {"description": "Revoked; the token no longer works"},
                    "401": PROBLEM,
                    "404": {
                        **PROBLEM,
                        "description": "No such token (unknown, or another user's)",
                    },
                },
            }
        },
        "/account": {
            "get": {
                "operationId": "getAccount",
                "summary": "Your profile",
                "responses": {"200": json_response("The account", "Account"), "401": PROBLEM},
            },
            "patch": {
                "operationId": "updateAccount",
                "summary": "Change your name or date of birth",
                "description": "At least one field. " + BODY_RULES,
                "requestBody": json_body("AccountChange"),
                "responses": {
                    "200": json_response("The account as changed", "Account"),
                    "400": PROBLEM,
                    "401": PROBLEM,
                    "413": TOO_LARGE_JSON,
                },
            },
        },
        "/account/phone": {
            "post": {
                "operationId": "requestPhoneChange",
                "summary": "Ask for a code to move the account to a new mobile number",
                "description": (
                    "Sends a code to the new number; the number changes only once "
                    "`POST /account/phone/verify` confirms it. " + BODY_RULES
                ),
                "requestBody": json_body("LoginRequest"),
                "responses": {
                    "202": CODE_SENT,
                    "400": PROBLEM,
                    "401": PROBLEM,
                    "413": TOO_LARGE_JSON,
                    "429": RATE_LIMITED,
                    "503": UNAVAILABLE,
                },
            }
        },
        "/account/phone/verify": {
            "post": {
                "operationId": "confirmPhoneChange",
                "summary": "Confirm the new number with its code",
                "description": BODY_RULES,
                "requestBody": json_body("PhoneVerifyRequest"),
                "responses": {
                    "200": json_response("The account with its new number", "Account"),
                    "400": BAD_CODE,
                    "401": PROBLEM,
                    "404": NO_VERIFICATION,
                    "409": {
                        **PROBLEM,
                        "description": "The number cannot be moved to this account",
                    },
                    "410": GONE,
                    "413": TOO_LARGE_JSON,
                    "429": RATE_LIMITED,
                    "503": UNAVAILABLE,
                },
            }
        },
        "/account/auth-log": {
            "get": {
                "operationId": "listAuthLog",
                "summary": "Sign-in attempts on your account, newest first",
                "parameters": [LIMIT, CURSOR],
                "responses": {
                    "200": json_response("One page", "AuthLogPage"),
                    "400": PROBLEM,
                    "401": PROBLEM,
                },
            }
        },
    }


def schemas() -> dict[str, Any]:
    return {
        "SignupRequest": {
            "type": "object",
            "additionalProperties": False,
            "required": ["first_name", "last_name", "date_of_birth", "phone"],
            "properties": {
                "first_name": _NAME,
                "last_name": _NAME,
                "date_of_birth": _DATE,
                "phone": _PHONE,
                "referral_code": {"type": ["string", "null"], "maxLength": 40},
            },
        },
        "LoginRequest": {
            "type": "object",
            "additionalProperties": False,
            "required": ["phone"],
            "properties": {"phone": _PHONE},
        },
        "VerifyRequest": {
            "type": "object",
            "additionalProperties": False,
            "required": ["verification_id", "code"],
            "properties": {
                "verification_id": {"type": "string"},
                "code": {"type": "string", "pattern": "^[0-9]{6}$"},
                "device": {
                    "type": "string",
                    "minLength": 1,
                    "maxLength": 100,
                    "description": "Shown in the device list; default `unnamed device`",
                },
            },
        },
        "PhoneVerifyRequest": {
            "type": "object",
            "additionalProperties": False,
            "required": ["verification_id", "code"],
            "properties": {
                "verification_id": {"type": "string"},
                "code": {"type": "string", "pattern": "^[0-9]{6}$"},
            },
        },
        "Verification": {
            "type": "object",
            "required": ["verification_id", "expires_at"],
            "properties": {"verification_id": {"type": "string"}, "expires_at": DATE_TIME},
        },
        "SignedIn": {
            "type": "object",
            "required": ["token", "token_id", "created", "user"],
            "properties": {
                "token": {"type": "string", "description": "Shown once; send as Bearer"},
                "token_id": {"type": "string"},
                "created": {"type": "boolean", "description": "A new account was made"},
                "user": ref("Account"),
            },
        },
        "Account": {
            "type": "object",
            "required": [
                "id",
                "first_name",
                "last_name",
                "date_of_birth",
                "phone",
                "region",
                "addresses",
                "created_at",
                "suspended",
                "referral_code",
            ],
            "properties": {
                "id": {"type": "string"},
                "first_name": {"type": "string"},
                "last_name": {"type": "string"},
                "date_of_birth": _DATE,
                "phone": {"type": "string", "description": "The verified mobile number"},
                "region": {"type": "string"},
                "addresses": {
                    "type": "array",
                    "items": {"type": "string"},
                    "description": "The account's OptMsg SMS numbers and email addresses",
                },
                "created_at": DATE_TIME,
                "suspended": {"type": "boolean"},
                "referral_code": {"type": ["string", "null"]},
            },
        },
        "AccountChange": {
            "type": "object",
            "additionalProperties": False,
            "minProperties": 1,
            "properties": {"first_name": _NAME, "last_name": _NAME, "date_of_birth": _DATE},
        },
        "Token": {
            "type": "object",
            "required": ["id", "device", "created_at", "last_used_at", "current"],
            "properties": {
                "id": {"type": "string"},
                "device": {"type": "string"},
                "created_at": DATE_TIME,
                "last_used_at": {
                    "type": ["string", "null"],
                    "format": "date-time",
                    "description": "Recorded at most once a minute",
                },
                "current": {"type": "boolean", "description": "The token of this request"},
            },
        },
        "TokenPage": page("Token"),
        "AuthLogEntry": {
            "type": "object",
            "required": ["id", "created_at", "method", "outcome", "device", "ip"],
            "properties": {
                "id": {"type": "string"},
                "created_at": DATE_TIME,
                "method": {"type": "string", "enum": ["sms_code", "phone_change"]},
                "outcome": {
                    "type": "string",
                    "enum": [
                        "success",
                        "account_created",
                        "phone_changed",
                        "wrong_code",
                        "expired",
                        "too_many_attempts",
                        "already_used",
                        "suspended",
                        "number_taken",
                    ],
                },
                "device": {"type": ["string", "null"]},
                "ip": {
                    "type": ["string", "null"],
                    "description": "Erased after privacy.ip_log_days",
                },
            },
        },
        "AuthLogPage": page("AuthLogEntry"),
    }
