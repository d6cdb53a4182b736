"""A wrapped server stream cancelled while it waits to send: the call's context variables
are undone without the "created in a different Context" error grpc used to log."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from contextvars import ContextVar

import grpc
import pytest

from adapters.grpc.handlers import reset_var, wrap_handler

_who: ContextVar[str | None] = ContextVar("who", default=None)
METHOD = "/test.Streams/Endless"


def test_reset_var_undoes_in_its_own_context_and_ignores_another() -> None:
    token = _who.set("alice")
    assert _who.get() == "alice"
    reset_var(_who, token)
    assert _who.get() is None

    import contextvars

    token = _who.set("bob")
    other = contextvars.copy_context()
    with pytest.raises(ValueError, match="different Context"):  # the plain reset
        other.run(_who.reset, token)
    other.run(reset_var, _who, token)  # no error
    reset_var(_who, token)
    assert _who.get() is None


class _Around(grpc.aio.ServerInterceptor):
    async def intercept_service(self, continuation, details):  # type: ignore[no-untyped-def]
        handler = await continuation(details)

        @asynccontextmanager
        async def around(context: grpc.aio.ServicerContext) -> AsyncIterator[None]:
            token = _who.set("caller")
            try:
                yield
            finally:
                reset_var(_who, token)

        return wrap_handler(handler, around)


async def _endless(request: bytes, context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
    while True:
        assert _who.get() == "caller"
        yield b"x" * 1_000_000  # far beyond the flow-control window: waits to send


async def test_a_cancelled_stream_waiting_to_send_logs_no_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    loop = asyncio.get_running_loop()
    loop_errors: list[dict[str, object]] = []
    loop.set_exception_handler(lambda _loop, ctx: loop_errors.append(ctx))
    handler = grpc.method_handlers_generic_handler(
        "test.Streams",
        {"Endless": grpc.unary_stream_rpc_method_handler(_endless)},
    )
    server = grpc.aio.server(interceptors=[_Around()])
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        with caplog.at_level(logging.WARNING):
            for _ in range(5):
                async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                    call = channel.unary_stream(METHOD)(b"")
                    await call.read()  # the stream runs; the next messages wait to be sent
                    await asyncio.sleep(0.05)
                    call.cancel()
            await asyncio.sleep(0.2)
    finally:
        await server.stop(None)
        loop.set_exception_handler(None)
    text = "\n".join(r.getMessage() + str(r.exc_info) for r in caplog.records)
    text += "\n".join(str(e) for e in loop_errors)
    assert "different Context" not in text, text
