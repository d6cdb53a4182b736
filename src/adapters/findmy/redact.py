"""Keeps the Apple ID, password and tokens of our accounts out of every log line, including
the ``findmy`` library's own (it logs the user name at INFO when it signs in): a filter on
each of its loggers replaces any known secret in the message by ``[redacted]``."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

REDACTED = "[redacted]"


class SecretRedactor(logging.Filter):
    def __init__(self) -> None:
        super().__init__()
        self._secrets: set[str] = set()

    def add(self, secrets: Iterable[str]) -> None:
        self._secrets |= {s for s in secrets if isinstance(s, str) and len(s) >= 4}

    def redact(self, text: str) -> str:
        for secret in sorted(self._secrets, key=len, reverse=True):
            if secret in text:
                text = text.replace(secret, REDACTED)
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        if not self._secrets:
            return True
        try:
            message = record.getMessage()
        except Exception:  # a malformed record: leave it to the handler
            return True
        clean = self.redact(message)
        if clean != message:
            record.msg, record.args = clean, ()
        if record.exc_info and record.exc_info[1] is not None:
            text = str(record.exc_info[1])
            if self.redact(text) != text:
                record.exc_info, record.exc_text = None, None
                record.msg = f"{record.msg} (exception withheld: it named a secret)"
        return True


REDACTOR = SecretRedactor()


def _strings(value: Any) -> Iterable[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, Mapping):
        for v in value.values():
            yield from _strings(v)
    elif isinstance(value, list | tuple):
        for v in value:
            yield from _strings(v)


def session_secrets(session: Mapping[str, Any]) -> set[str]:
    """The user name, password, DSID and every token of a findmy session."""
    account = session.get("account", {}) or {}
    login = (session.get("login", {}) or {}).get("data", {}) or {}
    found = {account.get("username"), account.get("password"), login.get("dsid")}
    found |= set(_strings(login.get("mobileme_data", {})))
    found |= {str(login.get("adsid", "")), str(login.get("GsIdmsToken", ""))}
    return {s for s in found if isinstance(s, str) and s}


def protect(session: Mapping[str, Any]) -> None:
    """Redact ``session``'s secrets from every log line of the findmy library."""
    REDACTOR.add(session_secrets(session))
    names = ["findmy"] + [
        n for n in logging.Logger.manager.loggerDict if n == "findmy" or n.startswith("findmy.")
    ]
    for name in names:
        logger = logging.getLogger(name)
        if REDACTOR not in logger.filters:
            logger.addFilter(REDACTOR)
