"""Whether a job may ask for a completion callback: only when its callback can be signed.

A key's jobs are signed with the key's own secret; with ``AUTH_DISABLED`` there is no key, and the jobs are signed
with ``CALLBACK_SECRET``. Without that setting a callback could not be verified by its receiver, so it is refused at
submit (422) rather than sent unsigned or never.
"""

from __future__ import annotations

from typing import Any, Final

from core.settings import Settings

CALLBACK_SECRET_UNSET: Final = "callback_secret_unset"  # noqa: S105 - an error type
"""The 422 error type of a callback asked for when nothing could sign it."""


def unsignable_callback(
    settings: Settings, owner: str | None, location: tuple[str | int, ...]
) -> dict[str, Any] | None:
    """The validation error of a callback at ``location`` that nothing could sign, or None when it can be signed."""
    if owner is not None or settings.callback_secret is not None:
        return None
    return {
        "type": CALLBACK_SECRET_UNSET,
        "loc": location,
        "msg": "callbacks of jobs submitted without an API key are signed with CALLBACK_SECRET, which this API "
        "does not have: set it, or turn API keys on",
    }
