"""tracker-findmy-sim: the Find My fetch protocol (as the ``findmy`` package speaks it) and an
Anisette endpoint on loopback, serving reports encrypted to the tags' real public keys.

Control API (JSON, for tests and ``make run``):
  POST /sim/reports  {"advertisement_key": b64, "reports": [{time, latitude, longitude,
                      confidence, accuracy_m, status?, long_form?}]}   queue reports for a tag
  POST /sim/journeys {"advertisement_key": b64, "journey": {start, storage: [lat, lon],
                      delivery: [lat, lon], storage_s, travel_s}}   a moving tag
  POST /sim/faults   {"mode": "429"|"500"|"401"|"empty"|"slow"|"garbage", "count": n,
                      "retry_after": s?, "delay_s": s?}               the next n fetches fail so
  GET  /sim/stats    counts of requests by outcome
  GET  /sim/account.json   a findmy account session pointing at this simulator
Apple keeps only the latest reports per key: at most ``--keep`` per tag are answered.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import json
import random
import secrets
from collections import Counter, defaultdict, deque
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from simulator.crypto import PlainReport, encrypt_report
from simulator.trajectory import Journey, sample_reports

FETCH_PATH = "/findmyservice/v2/fetch"
ANISETTE_PATH = "/anisette"
DSID = "1234567890"


class Simulator:
    def __init__(self, keep: int = 20, token: str | None = None, seed: int | None = None) -> None:
        self.token = token or secrets.token_hex(16)
        self.keep = keep
        self.payloads: dict[str, deque[bytes]] = defaultdict(lambda: deque(maxlen=keep))
        self.faults: deque[dict[str, Any]] = deque()
        self.stats: Counter[str] = Counter()
        self.base_url = ""
        self.journeys: dict[bytes, tuple[Journey, datetime]] = {}
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
                encrypt_report(target, plain, long_form=bool(r.get("long_form")))
            )
        return len(reports)

    def account_json(self) -> dict[str, Any]:
        """A logged-in findmy account session whose endpoints are this simulator."""
        return {
            "type": "account",
            "ids": {
                "uid": "00000000-0000-4000-8000-000000000001",
                "devid": "00000000-0000-4000-8000-000000000002",
            },
            "account": {
                "username": "simulator@example.com",
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
                    "dsid": DSID,
                    "mobileme_data": {"tokens": {"searchPartyToken": self.token}},
                },
            },
            "anisette": {"type": "aniRemote", "url": self.base_url + ANISETTE_PATH},
        }

    # -- HTTP ---------------------------------------------------------------------------------
    async def anisette(self, request: web.Request) -> web.Response:
        self.stats["anisette"] += 1
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
        if creds != f"{DSID}:{self.token}":
            self.stats["401"] += 1
            return web.Response(status=401)
        if not request.headers.get("X-Apple-I-MD"):
            self.stats["400"] += 1
            return web.json_response({"statusCode": "400"}, status=400)
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
        body = await request.json()
        self.advance()
        payload = []
        for entry in body.get("fetch", []):
            for hashed in entry.get("primaryIds", []):
                found = list(self.payloads.get(hashed, ()))
                if found:
                    payload.append(
                        {
                            "id": hashed,
                            "locationInfo": [base64.b64encode(p).decode() for p in found],
                        }
                    )
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
        return web.json_response(dict(self.stats))

    async def control_account(self, request: web.Request) -> web.Response:
        return web.json_response(self.account_json())

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
    ap.add_argument("--keep", type=int, default=20, help="reports answered per key")
    ap.add_argument("--account-json", help="write the account session for it here")
    args = ap.parse_args()

    async def run() -> None:
        sim = Simulator(keep=args.keep)
        await start(sim, args.host, args.port)
        if args.account_json:
            with open(args.account_json, "w") as f:  # noqa: ASYNC230 - once, at start
                json.dump(sim.account_json(), f)
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
