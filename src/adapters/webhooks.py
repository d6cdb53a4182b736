"""Webhook requests over HTTP (aiohttp): one POST per delivery, bounded by a total timeout,
no redirects followed (a receiver that moved must be updated, not chased)."""

from __future__ import annotations

import asyncio

import aiohttp


class AiohttpWebhookSender:
    def __init__(self, timeout_s: float = 10.0, user_agent: str = "tracker-webhooks/1") -> None:
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._agent = user_agent
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=self._timeout, headers={"User-Agent": self._agent}
            )
        return self._session

    async def send(self, url: str, body: bytes, headers: dict[str, str]) -> tuple[int | None, str]:
        try:
            async with self._client().post(
                url, data=body, headers=headers, allow_redirects=False
            ) as response:
                await response.read()
                status = response.status
                return status, "" if 200 <= status < 300 else f"HTTP {status}"
        except TimeoutError:
            return None, "timeout"
        except asyncio.CancelledError:
            raise
        except (aiohttp.ClientError, OSError, ValueError) as err:
            return None, f"{type(err).__name__}: {err}"[:500]

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
