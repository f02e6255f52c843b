"""What an authorization request (RFC 6749 §4.1.1 with RFC 7636's PKCE, and OpenID
Connect's `nonce`, `prompt` and `max_age`) must be, wherever it arrives: at the web front
end's /oauth/authorize from the browser, or at auth's pushed authorization request
endpoint from the client (RFC 9126). Whether its client and redirect URI go together is
auth's to say (`auth_service.oauth`). `dpop_jkt` (RFC 9449 §10) binds the code to the key
of that thumbprint: only a DPoP proof by it redeems the code."""

from __future__ import annotations

import re
from collections.abc import Mapping

# The parameters read; others are ignored (§3.1).
PARAMS = (
    "response_type",
    "client_id",
    "redirect_uri",
    "code_challenge",
    "code_challenge_method",
    "scope",
    "state",
    "nonce",
    "prompt",
    "max_age",
    "login_hint",
    "dpop_jkt",
)
# A pushed request's request_uri (RFC 9126), as auth hands them out.
REQUEST_URI_PREFIX = "urn:ietf:params:oauth:request_uri:"
CHALLENGE = re.compile(r"[A-Za-z0-9_-]{43}")  # S256's: 32 bytes in base64url
MAX_AGE = re.compile(r"[0-9]{1,9}")
THUMBPRINT = re.compile(r"[A-Za-z0-9_-]{43}")  # a JWK's SHA-256 thumbprint (RFC 7638)
PROMPTS = ("", "none", "login", "consent")


def refusal(values: Mapping[str, str]) -> tuple[str, str] | None:
    """What is wrong with a request from a known client, as an `error` and its words."""
    if values.get("response_type") != "code":
        return "unsupported_response_type", "response_type must be code"
    challenge = values.get("code_challenge", "")
    if values.get("code_challenge_method") != "S256" or not CHALLENGE.fullmatch(challenge):
        return "invalid_request", "PKCE is required: a code_challenge with method S256"
    if len(values.get("nonce", "")) > 512 or len(values.get("scope", "")) > 1024:
        return "invalid_request", "nonce or scope is too long"
    if values.get("prompt", "") not in PROMPTS:
        return "invalid_request", "prompt must be none, login or consent"
    if "max_age" in values and not MAX_AGE.fullmatch(values["max_age"]):
        return "invalid_request", "max_age must be a number of seconds"
    if "dpop_jkt" in values and not THUMBPRINT.fullmatch(values["dpop_jkt"]):
        return "invalid_request", "dpop_jkt must be a key's SHA-256 thumbprint (RFC 7638)"
    return None
