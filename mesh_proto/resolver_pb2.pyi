from mesh_proto import dtab_pb2 as _dtab_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ReplicasReq(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: _dtab_pb2.Path
    def __init__(self, id: _Optional[_Union[_dtab_pb2.Path, _Mapping]] = ...) -> None: ...

class Endpoint(_message.Message):
    __slots__ = ("inet_af", "address", "port", "meta", "metadata")
    class AddressFamily(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        INET4: _ClassVar[Endpoint.AddressFamily]
        INET6: _ClassVar[Endpoint.AddressFamily]
    INET4: Endpoint.AddressFamily
    INET6: Endpoint.AddressFamily
    class Meta(_message.Message):
        __slots__ = ("nodeName",)
        NODENAME_FIELD_NUMBER: _ClassVar[int]
        nodeName: str
        def __init__(self, nodeName: _Optional[str] = ...) -> None: ...
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    INET_AF_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    PORT_FIELD_NUMBER: _ClassVar[int]
    META_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    inet_af: Endpoint.AddressFamily
    address: bytes
    port: int
    meta: Endpoint.Meta
    metadata: _containers.ScalarMap[str, str]
    def __init__(self, inet_af: _Optional[_Union[Endpoint.AddressFamily, str]] = ..., address: _Optional[bytes] = ..., port: _Optional[int] = ..., meta: _Optional[_Union[Endpoint.Meta, _Mapping]] = ..., metadata: _Optional[_Mapping[str, str]] = ...) -> None: ...

class Replicas(_message.Message):
    __slots__ = ("pending", "neg", "failed", "bound")
    class Pending(_message.Message):
        __slots__ = ()
        def __init__(self) -> None: ...
    class Neg(_message.Message):
        __slots__ = ()
        def __init__(self) -> None: ...
    class Failed(_message.Message):
        __slots__ = ("message",)
        MESSAGE_FIELD_NUMBER: _ClassVar[int]
        message: str
        def __init__(self, message: _Optional[str] = ...) -> None: ...
    class Bound(_message.Message):
        __slots__ = ("endpoints", "metadata")
        class MetadataEntry(_message.Message):
            __slots__ = ("key", "value")
            KEY_FIELD_NUMBER: _ClassVar[int]
            VALUE_FIELD_NUMBER: _ClassVar[int]
            key: str
            value: str
            def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
        ENDPOINTS_FIELD_NUMBER: _ClassVar[int]
        METADATA_FIELD_NUMBER: _ClassVar[int]
        endpoints: _containers.RepeatedCompositeFieldContainer[Endpoint]
        metadata: _containers.ScalarMap[str, str]
        def __init__(self, endpoints: _Optional[_Iterable[_Union[Endpoint, _Mapping]]] = ..., metadata: _Optional[_Mapping[str, str]] = ...) -> None: ...
    PENDING_FIELD_NUMBER: _ClassVar[int]
    NEG_FIELD_NUMBER: _ClassVar[int]
    FAILED_FIELD_NUMBER: _ClassVar[int]
    BOUND_FIELD_NUMBER: _ClassVar[int]
    pending: Replicas.Pending
    neg: Replicas.Neg
    failed: Replicas.Failed
    bound: Replicas.Bound
    def __init__(self, pending: _Optional[_Union[Replicas.Pending, _Mapping]] = ..., neg: _Optional[_Union[Replicas.Neg, _Mapping]] = ..., failed: _Optional[_Union[Replicas.Failed, _Mapping]] = ..., bound: _Optional[_Union[Replicas.Bound, _Mapping]] = ...) -> None: ...
