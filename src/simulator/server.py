"""tracker-findmy-sim: the Find My fetch protocol (as the ``findmy`` package speaks it) and an
Anisette endpoint on loopback, serving reports encrypted to the tags' real public keys.

Control API (JSON, for tests and ``make run``):
  POST /sim/reports  {"advertisement_key": b64, "reports": [{time, latitude, longitude,
                      confidence, accuracy_m, status?, long_form?}]}   queue reports for a tag
  POST /sim/journeys {"advertisement_key": b64, "journey": {start, storage: [lat, lon],
                      delivery: [lat, lon], storage_s, travel_s}}   a moving tag
  POST /sim/faults   {"mode": "429"|"500"|"401"|"empty"|"slow"|"garbage"|"anisette",
                      "count": n, "retry_after": s?, "delay_s": s?}   the next n fetches (or
                      Anisette calls) fail so; "retry_after" may be an HTTP date
  GET  /sim/stats    counts of requests by outcome
  GET  /sim/account.json?account=i   a findmy account session (account i, default 0)

It plays by Apple's rules as far as they are known: a key's reports are filtered by their
location time (``startDate`` <= time <= ``endDate``), so the newest one is answered again as
long as the window includes it; only the latest ``--keep`` reports per key are kept, none
older than ``--retain-days``; at most ``--per-entry`` are answered per key (the newest).
``--delay`` slows every answer down; requests in flight per account are counted.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import json
import math
import os
import random
import secrets
import time
from collections import Counter, defaultdict, deque
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp import web

from simulator.crypto import PlainReport, encrypt_report
from simulator.trajectory import Journey, sample_reports

FETCH_PATH = "/findmyservice/v2/fetch"
ANISETTE_PATH = "/anisette"
DSID = "1234567890"


class Simulator:
    """``accounts`` Apple accounts may fetch (each its own DSID and token). Per account it
    records the most requests it ever had in flight at once and the shortest gap between two
    of its requests, so tests can check the fetcher's pacing. ``once``: a report is answered
    only once (Apple's brief retention at its worst), so a fetched report that the fetcher
    drops is gone for good. ``record``: remember when each key was asked for."""

    def __init__(
        self,
        keep: int = 20,
        token: str | None = None,
        seed: int | None = None,
        accounts: int = 1,
        once: bool = False,
        record: bool = False,
        per_entry: int = 20,
        delay_s: float = 0.0,
        retain: timedelta = timedelta(days=7),
    ) -> None:
        self.token = token or secrets.token_hex(16)
        self.tokens = [self.token] + [secrets.token_hex(16) for _ in range(accounts - 1)]
        self.keep = keep
        self.once = once
        self.record = record
        self.per_entry = per_entry
        self.delay_s = delay_s
        self.retain = retain
        self.payloads: dict[str, list[tuple[float, bytes]]] = defaultdict(list)
        """Per hashed key: (location time, encrypted payload), oldest first."""
        self.faults: deque[dict[str, Any]] = deque()
        self.fresh: dict[str, bytes] = {}
        """Tags seen all the time: every answer brings a new report of them, dated now."""
        self.anisette_urls: list[str] = []
        """The URL of every Anisette call (which server the client was configured with)."""
        self.anisette_faults = 0
        """Anisette calls still to fail (HTTP 500)."""
        self.raw_entries: list[dict[str, Any]] = []
        """Entries answered as given with the next fetch (bad payloads, for tests)."""
        self.stats: Counter[str] = Counter()
        self.base_url = ""
        self.journeys: dict[bytes, tuple[Journey, datetime]] = {}
        self.asked: dict[str, list[float]] = defaultdict(list)
        self.in_flight: Counter[int] = Counter()
        self.max_in_flight: Counter[int] = Counter()
        self.last_request: dict[int, float] = {}
        self.min_gap_s: dict[int, float] = {}
        self.served = 0
        self.requests: list[tuple[int, float, int]] = []
        """(account, time.time() at arrival, HTTP status answered) of every fetch."""
        self.keys_asked: list[int] = []
        """Keys asked for by every fetch answered (a full request asks for 64)."""
        self._rng = random.Random(seed)

    def add_journey(self, advertisement_key: bytes, journey: Journey) -> None:
        """A moving tag: its reports appear as time passes (generated when fetched)."""
        self.journeys[advertisement_key] = (journey, journey.start)

    def advance(self, now: datetime | None = None) -> None:
        """Generate the moving tags' reports up to ``now``."""
        now = now or datetime.now(UTC)
        for key, (journey, until) in list(self.journeys.items()):
            if now > until:
                self.add_reports(key, sample_reports(journey, until, now, self._rng))
                self.journeys[key] = (journey, now)

    def add_reports(self, advertisement_key: bytes, reports: list[dict[str, Any]]) -> int:
        hashed = base64.b64encode(hashlib.sha256(advertisement_key).digest()).decode()
        for r in reports:
            plain = PlainReport(
                time=datetime.fromisoformat(r["time"]).astimezone(UTC),
                latitude=float(r["latitude"]),
                longitude=float(r["longitude"]),
                confidence=int(r["confidence"]),
                accuracy_m=int(r["accuracy_m"]),
                status=int(r.get("status", 0)),
            )
            target = base64.b64decode(r["encrypt_to"]) if "encrypt_to" in r else advertisement_key
            self.payloads[hashed].append(
                (
                    plain.time.timestamp(),
                    encrypt_report(target, plain, long_form=bool(r.get("long_form"))),
                )
            )
        held = self.payloads[hashed]
        held.sort(key=lambda item: item[0])
        del held[: max(0, len(held) - self.keep)]
        return len(reports)

    def always_reporting(self, advertisement_key: bytes) -> None:
        """A tag some iPhone sees all the time: each fetch finds a new report of it."""
        hashed = base64.b64encode(hashlib.sha256(advertisement_key).digest()).decode()
        self.fresh[hashed] = advertisement_key

    def answer(self, hashed: str, start_ms: float | None, end_ms: float | None) -> list[bytes]:
        """What Apple answers for one key: its reports with a location time inside the
        window (the newest again each time the window includes it), newest ``per_entry``."""
        if hashed in self.fresh:
            # seen just now, or at the window's end if that is earlier (whole seconds, as
            # Find My times are): a fetch at most once a second finds a new report each time
            latest = time.time() if end_ms is None else min(time.time(), end_ms / 1000)
            now = datetime.fromtimestamp(math.floor(latest), UTC)
            if not self.payloads.get(hashed) or self.payloads[hashed][-1][0] < now.timestamp():
                lat = 50 + self._rng.random()
                self.add_reports(
                    self.fresh[hashed],
                    [
                        {
                            "time": now.isoformat(),
                            "latitude": lat,
                            "longitude": 10.0,
                            "confidence": 2,
                            "accuracy_m": 20,
                        }
                    ],
                )
        held = self.payloads.get(hashed, [])
        oldest = time.time() - self.retain.total_seconds()
        lo = -math.inf if start_ms is None else start_ms / 1000
        hi = math.inf if end_ms is None else end_ms / 1000
        found = [(t, p) for t, p in held if max(lo, oldest) <= t <= hi][-self.per_entry :]
        if found and self.once:
            answered = {id(p) for _, p in found}
            self.payloads[hashed] = [(t, p) for t, p in held if id(p) not in answered]
        return [p for _, p in found]

    def dsid(self, account: int) -> str:
        return str(int(DSID) + account)

    def account_json(self, account: int = 0) -> dict[str, Any]:
        """A logged-in findmy account session whose endpoints are this simulator."""
        return {
            "type": "account",
            "ids": {
                "uid": "00000000-0000-4000-8000-000000000001",
                "devid": "00000000-0000-4000-8000-000000000002",
            },
            "account": {
                "username": f"simulator{account or ''}@example.com",
                "password": "not-a-secret",
                "info": {
                    "account_name": "simulator@example.com",
                    "first_name": "Sim",
                    "last_name": "Ulator",
                    "trusted_device_2fa": False,
                },
            },
            "login": {
                "state": 3,
                "data": {
                    "dsid": self.dsid(account),
                    "mobileme_data": {"tokens": {"searchPartyToken": self.tokens[account]}},
                },
            },
            "anisette": {"type": "aniRemote", "url": self.base_url + ANISETTE_PATH},
        }

    # -- HTTP ---------------------------------------------------------------------------------
    async def anisette(self, request: web.Request) -> web.Response:
        self.stats["anisette"] += 1
        self.anisette_urls.append(str(request.rel_url))
        if self.anisette_faults > 0:
            self.anisette_faults -= 1
            self.stats["fault_anisette"] += 1
            return web.Response(status=500)
        return web.json_response(
            {
                "X-Apple-I-MD": base64.b64encode(secrets.token_bytes(16)).decode(),
                "X-Apple-I-MD-M": base64.b64encode(secrets.token_bytes(60)).decode(),
                "X-Apple-I-MD-RINFO": "17106176",
                "X-Apple-I-MD-LU": "",
                "X-Apple-I-SRL-NO": "0",
                "X-Apple-I-Client-Time": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                "X-Apple-I-TimeZone": "UTC",
                "X-Apple-Locale": "en_US",
                "X-Mme-Client-Info": "<MacBookPro18,3> <Mac OS X;13.4.1;22F8> "
                "<com.apple.AOSKit/282 (com.apple.dt.Xcode/3594.4.19)>",
            }
        )

    async def fetch(self, request: web.Request) -> web.StreamResponse:
        self.stats["fetch"] += 1
        auth = request.headers.get("Authorization", "")
        scheme, _, encoded = auth.partition(" ")
        try:
            creds = base64.b64decode(encoded).decode() if scheme == "Basic" else ""
        except ValueError:
            creds = ""
        account = next(
            (i for i, t in enumerate(self.tokens) if creds == f"{self.dsid(i)}:{t}"), None
        )
        if account is None:
            self.stats["401"] += 1
            return web.Response(status=401)
        if not request.headers.get("X-Apple-I-MD"):
            self.stats["400"] += 1
            return web.json_response({"statusCode": "400"}, status=400)
        now = time.monotonic()
        if account in self.last_request:
            gap = now - self.last_request[account]
            self.min_gap_s[account] = min(self.min_gap_s.get(account, gap), gap)
        self.last_request[account] = now
        self.in_flight[account] += 1
        self.max_in_flight[account] = max(self.max_in_flight[account], self.in_flight[account])
        arrived = time.time()
        status = 500
        try:
            response = await self._answer(request)
            status = response.status
            return response
        finally:
            self.in_flight[account] -= 1
            self.requests.append((account, arrived, status))

    async def _answer(self, request: web.Request) -> web.StreamResponse:
        if self.faults:
            fault = self.faults[0]
            fault["count"] -= 1
            if fault["count"] <= 0:
                self.faults.popleft()
            self.stats["fault_" + fault["mode"]] += 1
            mode = fault["mode"]
            if mode in ("429", "500", "503", "401"):
                headers = (
                    {"Retry-After": str(fault["retry_after"])}
                    if fault.get("retry_after") is not None
                    else {}
                )
                return web.Response(status=int(mode), headers=headers)
            if mode == "empty":
                return web.Response(status=200, body=b"")
            if mode == "garbage":
                return web.Response(status=200, body=b"{not json")
            if mode == "slow":
                await asyncio.sleep(float(fault.get("delay_s", 5)))
        if self.delay_s > 0:
            await asyncio.sleep(self.delay_s)
        body = await request.json()
        self.advance()
        payload = []
        self.keys_asked.append(sum(len(e.get("primaryIds", [])) for e in body.get("fetch", [])))
        for entry in body.get("fetch", []):
            for hashed in entry.get("primaryIds", []):
                if self.record:
                    self.asked[hashed].append(time.time())
                found = self.answer(hashed, entry.get("startDate"), entry.get("endDate"))
                self.served += len(found)
                if found:
                    payload.append(
                        {
                            "id": hashed,
                            "locationInfo": [base64.b64encode(p).decode() for p in found],
                        }
                    )
        payload += self.raw_entries
        self.raw_entries = []
        self.stats["ok"] += 1
        return web.json_response(
            {
                "statusCode": "200",
                "acsnLocations": {"statusCode": "200", "locationPayload": payload},
            }
        )

    async def control_reports(self, request: web.Request) -> web.Response:
        body = await request.json()
        n = self.add_reports(base64.b64decode(body["advertisement_key"]), body["reports"])
        return web.json_response({"queued": n})

    async def control_journeys(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.add_journey(
            base64.b64decode(body["advertisement_key"]), Journey.from_json(body["journey"])
        )
        return web.json_response({"journeys": len(self.journeys)})

    async def control_faults(self, request: web.Request) -> web.Response:
        body = await request.json()
        if str(body["mode"]) == "anisette":
            self.anisette_faults += int(body.get("count", 1))
            return web.json_response({"faults": len(self.faults)})
        self.faults.append(
            {
                "mode": str(body["mode"]),
                "count": int(body.get("count", 1)),
                "retry_after": body.get("retry_after"),
                "delay_s": body.get("delay_s", 5),
            }
        )
        return web.json_response({"faults": len(self.faults)})

    async def control_stats(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                **self.stats,
                "served_reports": self.served,
                "max_in_flight": {self.dsid(a): n for a, n in self.max_in_flight.items()},
                "min_gap_s": {self.dsid(a): g for a, g in self.min_gap_s.items()},
            }
        )

    async def control_account(self, request: web.Request) -> web.Response:
        account = int(request.query.get("account", "0"))
        if not 0 <= account < len(self.tokens):
            return web.json_response({"error": "no such account"}, status=404)
        return web.json_response(self.account_json(account))

    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.add_routes(
            [
                web.get(ANISETTE_PATH, self.anisette),
                web.post(FETCH_PATH, self.fetch),
                web.post("/sim/reports", self.control_reports),
                web.post("/sim/faults", self.control_faults),
                web.post("/sim/journeys", self.control_journeys),
                web.get("/sim/stats", self.control_stats),
                web.get("/sim/account.json", self.control_account),
            ]
        )
        return app


async def start(sim: Simulator, host: str = "127.0.0.1", port: int = 0) -> web.AppRunner:
    """Serve ``sim``; returns the runner (``await runner.cleanup()`` stops it)."""
    runner = web.AppRunner(sim.app(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    sim.base_url = f"http://{host}:{bound}"
    return runner


def main() -> None:
    ap = argparse.ArgumentParser(
        prog="tracker-findmy-sim",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8811)
    ap.add_argument("--keep", type=int, default=20, help="latest reports kept per key")
    ap.add_argument("--per-entry", type=int, default=20, help="reports answered per key")
    ap.add_argument("--delay", type=float, default=0.0, help="seconds before every answer")
    ap.add_argument("--accounts", type=int, default=1, help="Apple accounts it accepts")
    ap.add_argument(
        "--account-json",
        help="write the account session here (with --accounts N > 1: a directory, one file each)",
    )
    args = ap.parse_args()

    async def run() -> None:
        sim = Simulator(
            keep=args.keep, accounts=args.accounts, per_entry=args.per_entry, delay_s=args.delay
        )
        await start(sim, args.host, args.port)
        if args.account_json and args.accounts == 1:
            with open(args.account_json, "w") as f:  # noqa: ASYNC230 - once, at start
                json.dump(sim.account_json(), f)
        elif args.account_json:
            os.makedirs(args.account_json, exist_ok=True)
            for i in range(args.accounts):
                path = os.path.join(args.account_json, f"account-{i}.json")
                with open(path, "w") as f:  # noqa: ASYNC230 - once, at start
                    json.dump(sim.account_json(i), f)
        print(
            json.dumps(
                {
                    "event": "simulator listening",
                    "url": sim.base_url,
                    "fetch": sim.base_url + FETCH_PATH,
                }
            ),
            flush=True,
        )
        await asyncio.Event().wait()

    asyncio.run(run())


if __name__ == "__main__":
    main()
