"""Server reflection (grpc.reflection.v1alpha) that serves each file's descriptor WITH its
source info, so ``grpcurl describe`` shows the .proto comments.

grpcio-reflection serializes descriptors from a ``DescriptorPool``, which drops source info.
This servicer answers the same requests from the descriptor set ``make proto`` writes with
``--include_source_info`` (``tracker/descriptor_set.binpb``); a file missing from it (health,
reflection) is served from the pool, as before.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from importlib import resources

import grpc
from google.protobuf import descriptor, descriptor_pb2, descriptor_pool
from grpc_reflection.v1alpha import reflection_pb2 as r
from grpc_reflection.v1alpha import reflection_pb2_grpc as r_grpc

log = logging.getLogger("tracker")

DESCRIPTOR_SET = "descriptor_set.binpb"


def source_files(package: str = "tracker") -> dict[str, bytes]:
    """The serialized FileDescriptorProtos (with source info) of ``make proto``'s descriptor
    set, by file name; empty (comments not served) if the set is missing."""
    try:
        data = resources.files(package).joinpath(DESCRIPTOR_SET).read_bytes()
    except (FileNotFoundError, ModuleNotFoundError):
        log.warning("reflection serves no comments: %s/%s is missing", package, DESCRIPTOR_SET)
        return {}
    files = descriptor_pb2.FileDescriptorSet.FromString(data).file
    for f in files:
        _drop_default_json_names(f.message_type)
    return {f.name: f.SerializeToString() for f in files}


def _default_json_name(name: str) -> str:
    """protoc's lowerCamelCase JSON name of a field (``access_token`` -> ``accessToken``)."""
    head, *rest = name.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


def _drop_default_json_names(messages: Iterable[descriptor_pb2.DescriptorProto]) -> None:
    """protoc writes every field's json_name into a descriptor set; the pool's descriptors
    (served before) had none, so grpcurl printed the proto field names (``access_token``),
    which the README's walkthrough and people's scripts read. Only json_names that a .proto
    set explicitly are kept."""
    for m in messages:
        for field in m.field:
            if field.json_name == _default_json_name(field.name):
                field.ClearField("json_name")
        _drop_default_json_names(m.nested_type)


class SourceInfoReflection(r_grpc.ServerReflectionServicer):
    def __init__(
        self,
        service_names: Iterable[str],
        files: Mapping[str, bytes],
        pool: descriptor_pool.DescriptorPool | None = None,
    ) -> None:
        self._services = sorted(service_names)
        self._files = files
        self._pool = pool or descriptor_pool.Default()

    async def ServerReflectionInfo(
        self,
        request_iterator: AsyncIterator[r.ServerReflectionRequest],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[r.ServerReflectionResponse]:
        async for request in request_iterator:
            yield self.answer(request)

    def answer(self, request: r.ServerReflectionRequest) -> r.ServerReflectionResponse:
        pool = self._pool
        which = request.WhichOneof("message_request")
        if which == "file_by_filename":
            return self._file(request, lambda: pool.FindFileByName(request.file_by_filename))
        if which == "file_containing_symbol":
            name = request.file_containing_symbol
            return self._file(request, lambda: pool.FindFileContainingSymbol(name))
        if which == "file_containing_extension":
            ext = request.file_containing_extension

            def find() -> descriptor.FileDescriptor:
                message = pool.FindMessageTypeByName(ext.containing_type)
                field = pool.FindExtensionByNumber(message, ext.extension_number)
                return pool.FindFileContainingSymbol(field.full_name)

            return self._file(request, find)
        if which == "all_extension_numbers_of_type":
            try:
                message = pool.FindMessageTypeByName(request.all_extension_numbers_of_type)
            except KeyError:
                return _error(request, grpc.StatusCode.NOT_FOUND, "type not found")
            numbers = sorted(e.number for e in pool.FindAllExtensions(message))
            return r.ServerReflectionResponse(
                original_request=request,
                all_extension_numbers_response=r.ExtensionNumberResponse(
                    base_type_name=message.full_name, extension_number=numbers
                ),
            )
        if which == "list_services":
            return r.ServerReflectionResponse(
                original_request=request,
                list_services_response=r.ListServiceResponse(
                    service=[r.ServiceResponse(name=name) for name in self._services]
                ),
            )
        return _error(request, grpc.StatusCode.INVALID_ARGUMENT, "unknown request")

    def _file(
        self, request: r.ServerReflectionRequest, find: Callable[[], descriptor.FileDescriptor]
    ) -> r.ServerReflectionResponse:
        try:
            found = find()
        except KeyError:
            return _error(request, grpc.StatusCode.NOT_FOUND, "not found")
        # the file and everything it imports, transitively, each once
        files: dict[str, descriptor.FileDescriptor] = {}
        todo = [found]
        while todo:
            f = todo.pop()
            if f.name not in files:
                files[f.name] = f
                todo += f.dependencies
        return r.ServerReflectionResponse(
            original_request=request,
            file_descriptor_response=r.FileDescriptorResponse(
                file_descriptor_proto=[self._serialized(f) for f in files.values()]
            ),
        )

    def _serialized(self, f: descriptor.FileDescriptor) -> bytes:
        if f.name in self._files:
            return self._files[f.name]
        proto = descriptor_pb2.FileDescriptorProto()
        f.CopyToProto(proto)
        return proto.SerializeToString()


def _error(
    request: r.ServerReflectionRequest, code: grpc.StatusCode, message: str
) -> r.ServerReflectionResponse:
    return r.ServerReflectionResponse(
        original_request=request,
        error_response=r.ErrorResponse(error_code=code.value[0], error_message=message),
    )


SERVICE_NAME: str = r.DESCRIPTOR.services_by_name["ServerReflection"].full_name


def add_reflection(
    server: grpc.aio.Server, service_names: Iterable[str], files: Mapping[str, bytes]
) -> None:
    """Reflection for ``service_names`` on ``server``, with the comments of ``files``."""
    r_grpc.add_ServerReflectionServicer_to_server(
        SourceInfoReflection(service_names, files), server
    )
