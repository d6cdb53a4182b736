"""Find My accounts for the fetcher: session files (from ``trackerctl findmy login``), each a
separate Apple account, so the fleet's requests spread over several. The files hold the
Apple password: they are read, never logged; an account is named by a hash of its user name."""

from __future__ import annotations

import hashlib
import json
import pathlib
from collections.abc import Sequence
from typing import Any

from findmy.reports.account import AsyncAppleAccount

from adapters.findmy.keypairs import KeyPairCache
from adapters.findmy.redact import protect
from adapters.findmy.source import FindMyLocationSource
from domain.ports.common import Clock
from domain.ports.keys import SecretSealer
from usecases.fetching import Account


class AccountFileError(ValueError):
    pass


def account_paths(spec: str) -> list[pathlib.Path]:
    """``spec``: comma-separated session files or directories (every ``*.json`` inside)."""
    paths: list[pathlib.Path] = []
    for item in (s.strip() for s in spec.split(",")):
        if not item:
            continue
        path = pathlib.Path(item)
        if path.is_dir():
            paths += sorted(path.glob("*.json"))
        else:
            paths.append(path)
    return paths


def read_session(path: pathlib.Path, anisette_url: str = "") -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
        username = data["account"]["username"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise AccountFileError(
            f"{path}: not a findmy account session ({type(exc).__name__})"
        ) from None
    if not isinstance(username, str) or not username:
        raise AccountFileError(f"{path}: the session has no user name")
    if anisette_url:
        data["anisette"] = {"type": "aniRemote", "url": anisette_url}
    return data


def account_name(session: dict[str, Any]) -> str:
    digest = hashlib.sha256(str(session["account"]["username"]).lower().encode()).hexdigest()
    return "acct-" + digest[:10]


def load_accounts(
    spec: str,
    sealer: SecretSealer,
    *,
    fetch_url: str,
    timeout_s: float,
    anisette_url: str = "",
    clock: Clock | None = None,
    key_pairs: KeyPairCache | None = None,
) -> list[Account]:
    """One ``Account`` per distinct Apple account among the files; a duplicate is an error
    (two sessions of one account would break its one-request-at-a-time rule). ``key_pairs``:
    one cache of key pairs shared by the accounts (None: none kept)."""
    accounts: list[Account] = []
    seen: dict[str, pathlib.Path] = {}
    for path in account_paths(spec):
        session = read_session(path, anisette_url)
        protect(session)
        name = account_name(session)
        if name in seen:
            raise AccountFileError(f"{path} and {seen[name]} hold the same Apple account")
        seen[name] = path
        source = FindMyLocationSource(
            AsyncAppleAccount.from_json(session),
            sealer,
            fetch_url=fetch_url,
            timeout_s=timeout_s,
            clock=clock,
            key_pairs=key_pairs,
        )
        accounts.append(Account(name, source))
    if not accounts:
        raise AccountFileError(f"no account session files in {spec!r}")
    return accounts


async def close_accounts(accounts: Sequence[Account]) -> None:
    for account in accounts:
        close = getattr(account.source, "close", None)
        if close is not None:
            await close()
