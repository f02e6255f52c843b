"""Forms: reading a posted form, and turning an API's refusal into words beside the field
it concerns (never raw JSON): 422 details by their `loc`, known `error` codes by meaning,
429 with when to try again."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import parse_qsl

from fastapi import Request

from web_service.api import ApiProblem
from web_service.i18n import Translator

FORM_TYPE = "application/x-www-form-urlencoded"
MAX_FIELDS = 50
FORM_LEVEL = ""  # the key of errors about the whole form


async def read_form_items(request: Request) -> list[tuple[str, str]]:
    """The posted fields in order, repeats too; none for anything but a urlencoded form."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != FORM_TYPE:
        return []
    body = (await request.body()).decode("utf-8", errors="replace")
    try:
        pairs = parse_qsl(body, keep_blank_values=True, max_num_fields=MAX_FIELDS)
    except ValueError:
        return []
    return [(name, value.replace("\x00", "")) for name, value in pairs]


async def read_form(request: Request) -> dict[str, str]:
    """The posted fields (first value of each); empty for anything but a urlencoded form."""
    fields: dict[str, str] = {}
    for name, value in await read_form_items(request):
        fields.setdefault(name, value)
    return fields


def whole_number(text: str, low: int, high: int) -> int | None:
    """`text` as an int in [low, high], or None: ASCII digits only (`isdigit` also takes
    "²" and "①", which int() refuses) and few of them (int() refuses over 4,300)."""
    if not (text.isascii() and text.isdigit() and len(text) <= 9):
        return None
    number = int(text)
    return number if low <= number <= high else None


@dataclass
class Form:
    """What a template needs to show a form again: the values typed (never passwords) and
    an error per field."""

    values: dict[str, str] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)

    def value(self, name: str) -> str:
        return self.values.get(name, "")

    def error(self, name: str) -> str:
        return self.errors.get(name, "")

    @property
    def form_error(self) -> str:
        return self.errors.get(FORM_LEVEL, "")

    def require(self, t: Translator, *names: str) -> bool:
        """Mark empty required fields; True when all are given."""
        for name in names:
            if not self.values.get(name, "").strip():
                self.errors.setdefault(name, t("error.required"))
        return not self.errors


# error code -> (field it concerns, or FORM_LEVEL; message key)
ERROR_CODES: dict[str, tuple[str, str]] = {
    "invalid_credentials": (FORM_LEVEL, "error.invalid_credentials"),
    "email_not_verified": (FORM_LEVEL, "error.email_not_verified"),
    "account_disabled": (FORM_LEVEL, "error.account_disabled"),
    "invalid_code": ("code", "error.invalid_code"),
    "invalid_password": ("password", "error.invalid_password"),
    "email_taken": ("new_email", "error.email_taken"),
    "email_unchanged": ("new_email", "error.email_unchanged"),
    "admin_self_lockout": (FORM_LEVEL, "error.admin_self_lockout"),
    "user_not_found": (FORM_LEVEL, "error.user_not_found"),
    "session_not_found": (FORM_LEVEL, "error.session_not_found"),
    "consent_not_found": (FORM_LEVEL, "error.consent_not_found"),
    "film_not_found": (FORM_LEVEL, "error.film_not_found"),
    "too_many_favourites": (FORM_LEVEL, "error.too_many_favourites"),
    "mfa_already_enabled": (FORM_LEVEL, "error.mfa_already_enabled"),
    "mfa_not_enabled": (FORM_LEVEL, "error.mfa_not_enabled"),
    "forbidden": (FORM_LEVEL, "error.forbidden"),
    "own_two_step": (FORM_LEVEL, "error.own_two_step"),
    "mfa_unavailable": (FORM_LEVEL, "error.mfa_unavailable"),
    "invalid_passkey": (FORM_LEVEL, "error.invalid_passkey"),
    "passkey_not_accepted": (FORM_LEVEL, "error.passkey_not_accepted"),
    "passkey_exists": (FORM_LEVEL, "error.passkey_exists"),
    "too_many_passkeys": (FORM_LEVEL, "error.too_many_passkeys"),
    "unavailable": (FORM_LEVEL, "error.unavailable"),
}
RETRY_LATER = {
    "rate_limited": "error.rate_limited",
    "account_locked": "error.account_locked",
    "too_many_code_attempts": "error.too_many_code_attempts",
}
# pydantic's error types, as a person would say them; by field first, then in general.
FIELD_TYPES: dict[tuple[str, str], str] = {
    ("password", "string_too_short"): "error.password_too_short",
    ("new_password", "string_too_short"): "error.password_too_short",
    ("code", "string_pattern_mismatch"): "error.code_format",
}
FIELD_ERRORS = {
    "email": "error.email_invalid",
    "new_email": "error.email_invalid",
}
TYPES = {
    "missing": "error.required",
    "string_too_short": "error.too_short",
    "string_too_long": "error.too_long",
    "string_pattern_mismatch": "error.invalid_value",
    "password_too_common": "error.password_too_common",
    "password_is_email": "error.password_is_email",
}


def explain(
    problem: ApiProblem,
    t: Translator,
    fields: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """Errors by form field for an API's refusal. `fields` renames API fields (and the
    fields ERROR_CODES names) to this form's fields, e.g. {"password": "current_password"}."""
    rename = dict(fields or {})

    def at(name: str) -> str:
        return rename.get(name, name)

    if problem.error in RETRY_LATER or problem.status == 429:
        seconds = problem.retry_after or 60
        key = RETRY_LATER.get(problem.error, "error.rate_limited")
        return {FORM_LEVEL: t(key, n=seconds)}
    if problem.details:
        errors: dict[str, str] = {}
        for detail in problem.details:
            loc = [str(p) for p in detail.get("loc", [])]
            name = loc[-1] if len(loc) > 1 else FORM_LEVEL
            kind = str(detail.get("type", ""))
            key = (
                FIELD_TYPES.get((name, kind))
                or FIELD_ERRORS.get(name)
                or TYPES.get(kind, "error.invalid_value")
            )
            errors.setdefault(at(name), t(key))
        return errors
    if problem.error in ERROR_CODES:
        name, key = ERROR_CODES[problem.error]
        return {at(name): t(key)}
    return {FORM_LEVEL: t("error.unexpected")}
