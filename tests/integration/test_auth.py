"""Sign-in and tokens over real gRPC on a real database: every defect is UNAUTHENTICATED."""

from __future__ import annotations

import asyncio
import base64
import json
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

import grpc
import jwt
import pytest
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from grpc_status import rpc_status

from adapters.security import AUDIENCE, ISSUER, JwtTokenCodec
from domain.access import AccessClaims, Principal
from domain.errors import Unauthenticated
from servers.config import DEVELOPMENT_SIGNING_KEY, Settings
from tests.integration.conftest import ADMIN_EMAIL, ADMIN_PASSWORD, Stack, stack_settings
from tracker.v1 import auth_service_pb2 as a
from tracker.v1 import resources_pb2 as pb
from tracker.v1 import setup_query_service_pb2 as q
from tracker.v1 import setup_service_pb2 as s
from tracker.v1 import user_query_service_pb2 as uq
from tracker.v1 import user_service_pb2 as us
from usecases.access import NewUser

pytestmark = pytest.mark.integration


async def code_of(call) -> grpc.StatusCode:
    try:
        await call
    except grpc.aio.AioRpcError as err:
        return err.code()
    return grpc.StatusCode.OK


async def login(
    stack: Stack, email: str = ADMIN_EMAIL, password: str = ADMIN_PASSWORD
) -> a.TokenPair:
    return (await stack.auth.Login(a.LoginRequest(email=email, password=password))).tokens


async def test_login_gives_a_working_token_and_bad_logins_look_alike(stack: Stack) -> None:
    tokens = await login(stack, email=ADMIN_EMAIL.upper())
    me = await stack.as_token(tokens.access_token).user_query.GetUser(uq.GetUserRequest())
    assert me.user.email == ADMIN_EMAIL
    assert me.user.admin
    errors = []
    for email, password in (
        (ADMIN_EMAIL, "wrong-password-123"),
        ("nobody@example.com", ADMIN_PASSWORD),
        ("not an email", "x"),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await login(stack, email, password)
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
        errors.append(err.value.details())
    assert len(set(errors)) == 1


async def test_refresh_rotates_and_reuse_revokes_everything(stack: Stack) -> None:
    first = await login(stack)
    second = (
        await stack.auth.RefreshToken(a.RefreshTokenRequest(refresh_token=first.refresh_token))
    ).tokens
    assert second.refresh_token != first.refresh_token
    assert (
        await code_of(
            stack.auth.RefreshToken(a.RefreshTokenRequest(refresh_token=first.refresh_token))
        )
        == grpc.StatusCode.UNAUTHENTICATED
    )
    # The re-use of a spent token revoked the newer one as well.
    assert (
        await code_of(
            stack.auth.RefreshToken(a.RefreshTokenRequest(refresh_token=second.refresh_token))
        )
        == grpc.StatusCode.UNAUTHENTICATED
    )
    assert (
        await code_of(stack.auth.RefreshToken(a.RefreshTokenRequest(refresh_token="made-up")))
        == grpc.StatusCode.UNAUTHENTICATED
    )


def forge(payload: dict, header: dict) -> str:
    def enc(obj: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).decode().rstrip("=")

    return f"{enc(header)}.{enc(payload)}."


async def test_tampered_expired_deleted_and_unsigned_tokens_are_unauthenticated(
    stack: Stack,
) -> None:
    user = await stack.access.create_user(
        Principal.system(), NewUser(email="gone@example.com", password="a-long-password-1")
    )
    good = await stack.token_for("gone@example.com")
    assert (
        await code_of(stack.as_token(good).user_query.GetUser(uq.GetUserRequest()))
        == grpc.StatusCode.OK
    )
    header, payload, signature = good.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    now = datetime.now(UTC)
    codec = JwtTokenCodec(DEVELOPMENT_SIGNING_KEY.encode())
    expired = codec.encode(
        AccessClaims(user.id, "x", "access", now - timedelta(hours=2), now - timedelta(hours=1))
    )
    tampered_claims = dict(claims, sub=str(uuid.uuid4()))
    tampered = ".".join(
        [
            header,
            base64.urlsafe_b64encode(json.dumps(tampered_claims).encode()).decode().rstrip("="),
            signature,
        ]
    )
    other_key = jwt.encode(dict(claims), "another-key-of-at-least-32-bytes!!", algorithm="HS256")
    unsigned = forge(claims, {"alg": "none", "typ": "JWT"})
    wrong_audience = jwt.encode(
        dict(claims, aud="someone-else"), DEVELOPMENT_SIGNING_KEY, algorithm="HS256"
    )
    for token in (expired, tampered, other_key, unsigned, wrong_audience, good + "x", ""):
        assert (
            await code_of(stack.as_token(token).query.ListClients(q.ListClientsRequest()))
            == grpc.StatusCode.UNAUTHENTICATED
        ), token
    await stack.users.DeleteUser(us.DeleteUserRequest(id=str(user.id)))
    assert (
        await code_of(stack.as_token(good).user_query.GetUser(uq.GetUserRequest()))
        == grpc.StatusCode.UNAUTHENTICATED
    )
    assert (claims["iss"], claims["aud"]) == (ISSUER, AUDIENCE)


async def test_health_and_reflection_need_no_token(stack: Stack) -> None:
    anonymous = stack.as_token(None)
    status = await anonymous.health.Check(health_pb2.HealthCheckRequest())
    assert status.status == health_pb2.HealthCheckResponse.SERVING
    assert anonymous.query_channel is not None
    reflection = reflection_pb2_grpc.ServerReflectionStub(anonymous.query_channel)
    responses = reflection.ServerReflectionInfo(
        iter([reflection_pb2.ServerReflectionRequest(list_services="")])
    )
    names = [svc.name async for r in responses for svc in r.list_services_response.service]
    assert "tracker.v1.SetupQueryService" in names


async def test_client_admin_manages_own_users_and_setup_only(stack: Stack) -> None:
    client = (
        await stack.setup.CreateClient(s.CreateClientRequest(client=pb.Client(display_name="Own")))
    ).client
    other = (
        await stack.setup.CreateClient(
            s.CreateClientRequest(client=pb.Client(display_name="Other"))
        )
    ).client
    await stack.users.CreateUser(
        us.CreateUserRequest(
            user=pb.User(
                email="boss@own.example",
                client_access=[pb.ClientAccess(client_id=client.id, role=pb.ROLE_CLIENT_ADMIN)],
            ),
            password="boss-password-123",
        )
    )
    boss = stack.as_token(
        (await login(stack, "boss@own.example", "boss-password-123")).access_token
    )
    # Creates a viewer of its own client, not of another one, and no administrator.
    viewer = (
        await boss.users.CreateUser(
            us.CreateUserRequest(
                user=pb.User(
                    email="eve@own.example",
                    client_access=[pb.ClientAccess(client_id=client.id, role=pb.ROLE_VIEWER)],
                ),
                password="viewer-password-1",
            )
        )
    ).user
    assert (
        await code_of(
            boss.users.CreateUser(
                us.CreateUserRequest(
                    user=pb.User(
                        email="x@other.example",
                        client_access=[pb.ClientAccess(client_id=other.id, role=pb.ROLE_VIEWER)],
                    ),
                    password="viewer-password-1",
                )
            )
        )
        == grpc.StatusCode.NOT_FOUND
    )
    assert (
        await code_of(
            boss.users.CreateUser(
                us.CreateUserRequest(
                    user=pb.User(email="root2@own.example", admin=True),
                    password="viewer-password-1",
                )
            )
        )
        == grpc.StatusCode.PERMISSION_DENIED
    )
    brand = (
        await boss.setup.CreateBrand(
            s.CreateBrandRequest(brand=pb.Brand(client_id=client.id, display_name="Own brand"))
        )
    ).brand
    assert (
        await code_of(
            boss.setup.CreateClient(
                s.CreateClientRequest(client=pb.Client(display_name="Mine now"))
            )
        )
        == grpc.StatusCode.PERMISSION_DENIED
    )
    assert (
        await code_of(boss.setup.DeleteClient(s.DeleteClientRequest(id=client.id)))
        == grpc.StatusCode.PERMISSION_DENIED
    )
    listed = (await boss.user_query.ListUsers(uq.ListUsersRequest())).users
    assert {u.email for u in listed} == {"boss@own.example", "eve@own.example"}
    # The viewer reads but cannot change.
    eve = stack.as_token((await login(stack, "eve@own.example", "viewer-password-1")).access_token)
    assert (await eve.query.GetBrand(q.GetBrandRequest(id=brand.id))).brand == brand
    assert (
        await code_of(
            eve.setup.UpdateBrand(
                s.UpdateBrandRequest(brand=pb.Brand(id=brand.id, display_name="hacked"))
            )
        )
        == grpc.StatusCode.PERMISSION_DENIED
    )
    # Revoking access hides the client at once.
    await boss.users.RevokeClientAccess(
        us.RevokeClientAccessRequest(user_id=viewer.id, client_id=client.id)
    )
    assert (
        await code_of(eve.query.GetBrand(q.GetBrandRequest(id=brand.id)))
        == grpc.StatusCode.NOT_FOUND
    )
    # Out of the boss's clients, the user is out of the boss's sight; an admin re-grants.
    assert (
        await code_of(
            boss.users.GrantClientAccess(
                us.GrantClientAccessRequest(
                    user_id=viewer.id, client_id=client.id, role=pb.ROLE_VIEWER
                )
            )
        )
        == grpc.StatusCode.NOT_FOUND
    )
    await stack.users.GrantClientAccess(
        us.GrantClientAccessRequest(user_id=viewer.id, client_id=client.id, role=pb.ROLE_VIEWER)
    )
    assert await code_of(eve.query.GetBrand(q.GetBrandRequest(id=brand.id))) == grpc.StatusCode.OK


async def test_password_rules_and_change(stack: Stack) -> None:
    err = None
    try:
        await stack.users.CreateUser(
            us.CreateUserRequest(user=pb.User(email="short@example.com"), password="short")
        )
    except grpc.aio.AioRpcError as exc:
        err = exc
    assert err is not None
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "password" in err.details()
    me = (await stack.user_query.GetUser(uq.GetUserRequest())).user
    await stack.users.SetUserPassword(
        us.SetUserPasswordRequest(user_id=me.id, password="a-new-admin-password")
    )
    assert (
        await code_of(stack.auth.Login(a.LoginRequest(email=ADMIN_EMAIL, password=ADMIN_PASSWORD)))
        == grpc.StatusCode.UNAUTHENTICATED
    )
    await login(stack, ADMIN_EMAIL, "a-new-admin-password")


async def test_two_concurrent_refreshes_with_one_token_cannot_both_succeed(stack: Stack) -> None:
    first = await login(stack)
    request = a.RefreshTokenRequest(refresh_token=first.refresh_token)
    codes = await asyncio.gather(*(code_of(stack.auth.RefreshToken(request)) for _ in range(4)))
    assert codes.count(grpc.StatusCode.OK) <= 1
    assert set(codes) <= {grpc.StatusCode.OK, grpc.StatusCode.UNAUTHENTICATED}


async def test_a_remembered_token_still_expires_and_a_tampered_one_is_never_remembered() -> None:
    codec = JwtTokenCodec(DEVELOPMENT_SIGNING_KEY.encode())
    now = datetime.now(UTC)
    user = uuid.uuid4()
    token = codec.encode(AccessClaims(user, "t", "access", now, now + timedelta(seconds=1.5)))
    assert codec.decode(token).user_id == user
    assert codec.decode(token).user_id == user  # from the verified cache
    header, payload, signature = token.split(".")
    flipped = "A" if signature[10] != "A" else "B"
    forged = ".".join([header, payload, signature[:10] + flipped + signature[11:]])
    with pytest.raises(Unauthenticated):
        codec.decode(forged)
    await asyncio.sleep(1.6)
    with pytest.raises(Unauthenticated, match="expired"):
        codec.decode(token)
    with pytest.raises(Unauthenticated, match="expired"):
        codec.decode(token)


# -- issue 10: sign-in abuse, revocation ------------------------------------------------------


def retry_of(err: grpc.aio.AioRpcError) -> tuple[int, int]:
    """(google.rpc.RetryInfo seconds, retry-after trailer) of a RESOURCE_EXHAUSTED answer."""
    status = rpc_status.from_call(err)
    assert status is not None
    (detail,) = status.details
    info = error_details_pb2.RetryInfo()
    assert detail.Unpack(info)
    trailer = dict(err.trailing_metadata() or ())["retry-after"]
    return info.retry_delay.seconds, int(trailer)


async def refused(call) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await call
    return err.value


async def test_a_login_flood_is_locked_out_with_a_retry_delay(
    database_url: str, stack_for: Callable[[Settings], Awaitable[Stack]]
) -> None:
    stack = await stack_for(
        stack_settings(database_url, login_max_failures_per_account=3, login_lockout_s=42)
    )
    codes = []
    for _ in range(3):
        err = await refused(login(stack, ADMIN_EMAIL, "wrong-password-123"))
        codes.append(err.code())
    assert codes == [grpc.StatusCode.UNAUTHENTICATED] * 3
    for password in ("wrong-password-123", ADMIN_PASSWORD):  # locked, even with the password
        err = await refused(login(stack, ADMIN_EMAIL, password))
        assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "too many sign-in attempts" in (err.details() or "")
        delay, trailer = retry_of(err)
        assert 0 < delay <= 42
        assert trailer == delay
    # Unknown e-mails get exactly the same treatment.
    unknown = [
        (await refused(login(stack, "nobody@example.com", "wrong-password-123"))).code()
        for _ in range(4)
    ]
    assert unknown == [grpc.StatusCode.UNAUTHENTICATED] * 3 + [grpc.StatusCode.RESOURCE_EXHAUSTED]


async def test_the_limit_holds_across_replicas(
    database_url: str, stack_for: Callable[[Settings], Awaitable[Stack]]
) -> None:
    settings = stack_settings(database_url, login_max_failures_per_account=3)
    first = await stack_for(settings)
    second = await stack_for(settings)  # another process on the same Redis and database
    for replica in (first, second, first):
        err = await refused(login(replica, ADMIN_EMAIL, "wrong-password-123"))
        assert err.code() == grpc.StatusCode.UNAUTHENTICATED
    err = await refused(login(second, ADMIN_EMAIL, ADMIN_PASSWORD))
    assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


async def test_without_redis_sign_in_works_and_is_still_limited(
    database_url: str, stack_for: Callable[[Settings], Awaitable[Stack]]
) -> None:
    stack = await stack_for(
        stack_settings(
            database_url, redis_url="redis://127.0.0.1:1/0", login_max_failures_per_account=2
        )
    )
    await login(stack)
    for _ in range(2):
        err = await refused(login(stack, ADMIN_EMAIL, "wrong-password-123"))
        assert err.code() == grpc.StatusCode.UNAUTHENTICATED
    err = await refused(login(stack, ADMIN_EMAIL, ADMIN_PASSWORD))
    assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


async def test_a_trusted_proxy_header_names_the_address_only_when_configured(
    database_url: str, stack_for: Callable[[Settings], Awaitable[Stack]]
) -> None:
    async def flood(stack: Stack, forwarded: list[str]) -> list[grpc.StatusCode]:
        codes = []
        for address in forwarded:
            call = stack.auth.Login(
                a.LoginRequest(email=f"{uuid.uuid4().hex[:8]}@example.com", password="x" * 12),
                metadata=(("x-forwarded-for", f"203.0.113.9, {address}"),),
            )
            codes.append((await refused(call)).code())
        return codes

    limits = {"login_max_failures_per_address": 1}
    # Not configured: every call comes from the loopback peer, whatever the header says.
    plain = await stack_for(stack_settings(database_url, **limits))
    assert (await flood(plain, ["198.51.100.1", "198.51.100.2"]))[-1] == (
        grpc.StatusCode.RESOURCE_EXHAUSTED
    )
    # Configured, with loopback as the trusted proxy: the proxy's last entry counts.
    proxied = await stack_for(
        stack_settings(
            database_url,
            login_address_header="x-forwarded-for",
            login_trusted_proxies="127.0.0.0/8,::1",
            **limits,
        )
    )
    assert (
        await flood(proxied, ["198.51.100.1", "198.51.100.2", "198.51.100.3"])
        == [grpc.StatusCode.UNAUTHENTICATED] * 3
    )
    assert (await flood(proxied, ["198.51.100.4"] * 3))[-1] == grpc.StatusCode.RESOURCE_EXHAUSTED
    # Configured, but the peer is not a trusted proxy: the header is ignored.
    untrusted = await stack_for(
        stack_settings(
            database_url,
            login_address_header="x-forwarded-for",
            login_trusted_proxies="10.0.0.0/8",
            **limits,
        )
    )
    assert (await flood(untrusted, ["198.51.100.5", "198.51.100.6"]))[-1] == (
        grpc.StatusCode.RESOURCE_EXHAUSTED
    )


async def test_a_password_reset_revokes_the_old_access_and_refresh_tokens(stack: Stack) -> None:
    await stack.users.CreateUser(
        us.CreateUserRequest(user=pb.User(email="rita@example.com"), password="rita-password-123")
    )
    old = await login(stack, "rita@example.com", "rita-password-123")
    rita = stack.as_token(old.access_token)
    me = (await rita.user_query.GetUser(uq.GetUserRequest())).user  # remembered by the cache
    await stack.users.SetUserPassword(
        us.SetUserPasswordRequest(user_id=me.id, password="rita-new-password-1")
    )
    err = await refused(rita.user_query.GetUser(uq.GetUserRequest()))
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "revoked" in (err.details() or "")
    err = await refused(
        stack.auth.RefreshToken(a.RefreshTokenRequest(refresh_token=old.refresh_token))
    )
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED
    new = await login(stack, "rita@example.com", "rita-new-password-1")
    again = stack.as_token(new.access_token)
    assert (await again.user_query.GetUser(uq.GetUserRequest())).user.id == me.id
    # Her own change revokes the token she made it with, too.
    await again.users.SetUserPassword(
        us.SetUserPasswordRequest(user_id=me.id, password="rita-third-password")
    )
    err = await refused(again.user_query.GetUser(uq.GetUserRequest()))
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_a_stale_update_cannot_undo_a_password_reset(stack: Stack) -> None:
    """A grant that read the user before a reset and writes after it (PostgreSQL)."""
    user = await stack.access.create_user(
        Principal.system(), NewUser(email="sam@example.com", password="sam-password-1234")
    )
    old = await login(stack, "sam@example.com", "sam-password-1234")
    assert stack.container is not None
    uow_factory = await stack.container.uow_factory.async_()
    async with uow_factory() as uow:
        stale = await uow.users.get(user.id)
    await stack.access.set_password(Principal.system(), user.id, "sam-new-password-1")
    async with uow_factory() as uow:
        await uow.users.update(stale)
        await uow.commit()
    async with uow_factory() as uow:
        assert (await uow.users.get(user.id)).token_version == 1
    err = await refused(stack.as_token(old.access_token).user_query.GetUser(uq.GetUserRequest()))
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED
    await login(stack, "sam@example.com", "sam-new-password-1")
    err = await refused(login(stack, "sam@example.com", "sam-password-1234"))
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED
