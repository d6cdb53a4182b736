"""Authentication of every call, and the servicers of sign-in and user management.

The interceptor turns the ``authorization: Bearer`` metadata into a domain ``Principal``,
kept in a context variable for the duration of the call; servicers hand it to use cases
(``caller()``). Health, reflection and AuthService need no token.
"""

from __future__ import annotations

import ipaddress
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from contextvars import ContextVar
from urllib.parse import unquote

import grpc

from adapters.grpc import convert as cv
from adapters.grpc.handlers import reset_var, wrap_handler
from adapters.grpc.telemetry import current_call
from domain.access import Principal, Role, TokenPair, User
from domain.errors import FieldViolation, InvalidArgument, Unauthenticated, field_prefix
from domain.pagination import PageTokens
from tracker.v1 import auth_service_pb2 as a
from tracker.v1 import auth_service_pb2_grpc as a_grpc
from tracker.v1 import resources_pb2 as pb
from tracker.v1 import user_query_service_pb2 as uq
from tracker.v1 import user_query_service_pb2_grpc as uq_grpc
from tracker.v1 import user_service_pb2 as us
from tracker.v1 import user_service_pb2_grpc as us_grpc
from usecases.access import AccessUseCases, Authenticate, NewUser

OPEN_PREFIXES = ("/grpc.health.v1.", "/grpc.reflection.", "/tracker.v1.AuthService/")

_caller: ContextVar[Principal | None] = ContextVar("caller", default=None)


def caller() -> Principal:
    """The authenticated caller of the current RPC."""
    principal = _caller.get()
    if principal is None:
        raise Unauthenticated("no authenticated caller")
    return principal


def bearer_token(context: grpc.aio.ServicerContext) -> str:
    values = [v for k, v in context.invocation_metadata() or () if k == "authorization"]
    if not values:
        raise Unauthenticated("missing authorization metadata (Bearer token)")
    scheme, _, token = str(values[0]).partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthenticated("authorization metadata must be 'Bearer <token>'")
    return token.strip()


class AuthInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self, authenticate: Authenticate) -> None:
        self._authenticate = authenticate

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None or handler_call_details.method.startswith(OPEN_PREFIXES):
            return handler

        @asynccontextmanager
        async def authenticated(context: grpc.aio.ServicerContext) -> AsyncIterator[None]:
            principal = await self._authenticate(bearer_token(context))
            reset = _caller.set(principal)
            info = current_call()
            if info is not None:  # the caller, on every log line of the call
                info.user_id = str(principal.user_id)
                info.client_ids = (
                    "*" if principal.admin else ",".join(sorted(map(str, principal.memberships)))
                )
            try:
                yield
            finally:
                reset_var(_caller, reset)

        return wrap_handler(handler, authenticated)


# -- conversions ----------------------------------------------------------------------------

_ROLE_TO_PB = {Role.CLIENT_ADMIN: pb.ROLE_CLIENT_ADMIN, Role.VIEWER: pb.ROLE_VIEWER}
_ROLE_FROM_PB = {v: k for k, v in _ROLE_TO_PB.items()}


def role(value: int, field: str = "role") -> Role:
    try:
        return _ROLE_FROM_PB[value]  # type: ignore[index]
    except KeyError:
        raise InvalidArgument(field, "must be ROLE_CLIENT_ADMIN or ROLE_VIEWER") from None


def user_pb(u: User) -> pb.User:
    return pb.User(
        id=str(u.id),
        email=u.email,
        display_name=u.display_name,
        admin=u.admin,
        client_access=[
            pb.ClientAccess(client_id=str(c), role=_ROLE_TO_PB[r])
            for c, r in sorted(u.memberships.items(), key=lambda i: str(i[0]))
        ],
        create_time=cv.ts(u.create_time),
        update_time=cv.ts(u.update_time),
    )


def tokens_pb(t: TokenPair) -> a.TokenPair:
    return a.TokenPair(
        access_token=t.access_token,
        access_token_expire_time=cv.ts(t.access_expires_at),
        refresh_token=t.refresh_token,
        refresh_token_expire_time=cv.ts(t.refresh_expires_at),
    )


Ctx = grpc.aio.ServicerContext


Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(text: str) -> tuple[Network, ...]:
    """``10.0.0.0/8, 192.168.1.7``: the trusted proxies setting."""
    return tuple(
        ipaddress.ip_network(p.strip(), strict=False) for p in text.split(",") if p.strip()
    )


def _peer_host(peer: str) -> str:
    """``ipv4:1.2.3.4:5678`` or ``ipv6:[::1]:5678`` (maybe percent-encoded) to the address."""
    kind, _, rest = unquote(peer).partition(":")
    if kind in ("ipv4", "ipv6"):
        host = rest.rsplit(":", 1)[0] if ":" in rest else rest
        return host.strip("[]")
    return peer


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def client_address(
    context: grpc.aio.ServicerContext, header: str = "", trusted: Sequence[Network] = ()
) -> str:
    """Where the call comes from: the TCP peer, or, when ``header`` is configured and the
    peer is a trusted proxy (any peer if ``trusted`` is empty), the last address in that
    header (the one the proxy itself appended; earlier ones are the client's to forge)."""
    peer = _peer_host(context.peer() or "")
    if not header:
        return peer
    peer_ip = _ip(peer)
    if trusted and (peer_ip is None or not any(peer_ip in net for net in trusted)):
        return peer
    values = [v for k, v in context.invocation_metadata() or () if k == header]
    if values:
        forwarded = _ip(str(values[-1]).split(",")[-1].strip())
        if forwarded is not None:
            return str(forwarded)
    return peer


class AuthServicer(a_grpc.AuthServiceServicer):
    def __init__(
        self, uc: AccessUseCases, address_header: str = "", trusted_proxies: str = ""
    ) -> None:
        self._uc = uc
        self._header = address_header.lower()
        self._trusted = parse_networks(trusted_proxies)

    def _source(self, context: Ctx) -> str:
        return client_address(context, self._header, self._trusted)

    async def Login(self, request: a.LoginRequest, context: Ctx) -> a.LoginResponse:
        pair = await self._uc.login(request.email, request.password, self._source(context))
        return a.LoginResponse(tokens=tokens_pb(pair))

    async def RefreshToken(
        self, request: a.RefreshTokenRequest, context: Ctx
    ) -> a.RefreshTokenResponse:
        if not request.refresh_token:
            raise InvalidArgument("refresh_token", "required")
        pair = await self._uc.refresh_tokens(request.refresh_token, self._source(context))
        return a.RefreshTokenResponse(tokens=tokens_pb(pair))


# Use-case field names of CreateUser that are not simply under ``user.`` on the wire.
_CREATE_USER_FIELDS = {"password": "password", "memberships": "user.client_access"}


class UserServicer(us_grpc.UserServiceServicer):
    def __init__(self, uc: AccessUseCases) -> None:
        self._uc = uc

    async def CreateUser(
        self, request: us.CreateUserRequest, context: Ctx
    ) -> us.CreateUserResponse:
        u = request.user
        memberships = {}
        with field_prefix("user"):
            for i, access in enumerate(u.client_access):
                with field_prefix(f"client_access[{i}]"):
                    memberships[cv.parse_id(access.client_id, "client_id")] = role(access.role)
            new = NewUser(
                email=u.email,
                password=request.password,
                display_name=u.display_name,
                admin=u.admin,
                memberships=memberships,
            )
        try:
            user = await self._uc.create_user(caller(), new)
        except InvalidArgument as err:
            raise InvalidArgument.of(
                [
                    FieldViolation(_CREATE_USER_FIELDS.get(v.field, "user." + v.field), v.reason)
                    for v in err.violations
                ]
            ) from None
        return us.CreateUserResponse(user=user_pb(user))

    async def DeleteUser(
        self, request: us.DeleteUserRequest, context: Ctx
    ) -> us.DeleteUserResponse:
        await self._uc.delete_user(caller(), cv.parse_id(request.id))
        return us.DeleteUserResponse()

    async def GrantClientAccess(
        self, request: us.GrantClientAccessRequest, context: Ctx
    ) -> us.GrantClientAccessResponse:
        user = await self._uc.set_client_access(
            caller(),
            cv.parse_id(request.user_id, "user_id"),
            cv.parse_id(request.client_id, "client_id"),
            role(request.role),
        )
        return us.GrantClientAccessResponse(user=user_pb(user))

    async def RevokeClientAccess(
        self, request: us.RevokeClientAccessRequest, context: Ctx
    ) -> us.RevokeClientAccessResponse:
        user = await self._uc.set_client_access(
            caller(),
            cv.parse_id(request.user_id, "user_id"),
            cv.parse_id(request.client_id, "client_id"),
            None,
        )
        return us.RevokeClientAccessResponse(user=user_pb(user))

    async def SetUserPassword(
        self, request: us.SetUserPasswordRequest, context: Ctx
    ) -> us.SetUserPasswordResponse:
        await self._uc.set_password(
            caller(), cv.parse_id(request.user_id, "user_id"), request.password
        )
        return us.SetUserPasswordResponse()


class UserQueryServicer(uq_grpc.UserQueryServiceServicer):
    def __init__(self, uc: AccessUseCases, tokens: PageTokens) -> None:
        self._uc = uc
        self._tokens = tokens

    async def GetUser(self, request: uq.GetUserRequest, context: Ctx) -> uq.GetUserResponse:
        me = caller()
        user_id = cv.parse_id(request.id) if request.id else me.user_id
        return uq.GetUserResponse(user=user_pb(await self._uc.get_user(me, user_id)))

    async def ListUsers(self, request: uq.ListUsersRequest, context: Ctx) -> uq.ListUsersResponse:
        key = "tracker.v1.UserQueryService/ListUsers"
        page = await self._uc.list_users(
            caller(), self._tokens.request(request.page_size, request.page_token, key)
        )
        return uq.ListUsersResponse(
            users=[user_pb(u) for u in page.items],
            next_page_token=self._tokens.next_token(page, key),
        )
