"""Limits on sign-in attempts: per account and per source address, with growing lockouts.

A key (an account or an address) may have ``max_attempts`` unsuccessful attempts within a
fixed ``window`` that starts with the first; the next attempt locks the key for
``first_lockout``, doubled for every further lockout within ``STRIKE_MEMORY``, at most
``max_lockout``. A successful attempt does not count (it is handed back), and a successful
sign-in clears its account's count. The same rule is computed by every throttle adapter
(in-process and Redis); a contract test runs both.
"""

from __future__ import annotations

import hashlib
import ipaddress
from dataclasses import dataclass, field
from datetime import timedelta

STRIKE_MEMORY = timedelta(hours=24)
"""How long a lockout makes the next one longer."""


@dataclass(frozen=True, slots=True)
class AttemptLimit:
    max_attempts: int
    window: timedelta
    first_lockout: timedelta
    max_lockout: timedelta

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be >= 1")
        if min(self.window, self.first_lockout) <= timedelta(0):
            raise ValueError("window and first_lockout must be positive")
        if self.max_lockout < self.first_lockout:
            raise ValueError("max_lockout must be >= first_lockout")

    def lockout(self, strikes: int) -> timedelta:
        """The lock after the ``strikes``-th lockout (1 for the first)."""
        if strikes >= 40:  # 2**39 times any lockout is beyond every sensible maximum
            return self.max_lockout
        factor: int = 2 ** max(strikes - 1, 0)
        return min(self.first_lockout * factor, self.max_lockout)


def _default_limit(max_attempts: int) -> AttemptLimit:
    return AttemptLimit(
        max_attempts=max_attempts,
        window=timedelta(minutes=15),
        first_lockout=timedelta(minutes=1),
        max_lockout=timedelta(minutes=15),
    )


@dataclass(frozen=True, slots=True)
class LoginLimits:
    """Defaults: 10 failed sign-ins per account and 100 per address in 15 minutes, then a
    lockout of 1 minute, doubling up to 15 minutes. RefreshToken: 100 failures per address."""

    per_account: AttemptLimit = field(default_factory=lambda: _default_limit(10))
    per_address: AttemptLimit = field(default_factory=lambda: _default_limit(100))


@dataclass(frozen=True, slots=True)
class ThrottleKey:
    """What is counted (``name``, safe to store: no e-mail in clear) and its limit."""

    name: str
    limit: AttemptLimit


def account_key(email: str, limit: AttemptLimit) -> ThrottleKey:
    """A normalised e-mail, hashed: the store of counts never holds addresses in clear."""
    return ThrottleKey("acct:" + hashlib.sha256(email.encode()).hexdigest()[:32], limit)


def address_key(address: str, limit: AttemptLimit, purpose: str = "login") -> ThrottleKey:
    """An IPv4 address, or the /64 network of an IPv6 one (a host usually has a whole /64,
    so counting single IPv6 addresses would be no limit at all). Anything else is counted
    by its text."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        text = address[:100]
    else:
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        if isinstance(ip, ipaddress.IPv6Address):
            text = str(ipaddress.ip_network(f"{ip}/64", strict=False))
        else:
            text = str(ip)
    return ThrottleKey(f"{purpose}-addr:{text}", limit)
