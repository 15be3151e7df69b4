from mesh_proto import dtab_pb2 as _dtab_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class BindReq(_message.Message):
    __slots__ = ("root", "name", "dtab")
    ROOT_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    DTAB_FIELD_NUMBER: _ClassVar[int]
    root: _dtab_pb2.Path
    name: _dtab_pb2.Path
    dtab: _dtab_pb2.Dtab
    def __init__(self, root: _Optional[_Union[_dtab_pb2.Path, _Mapping]] = ..., name: _Optional[_Union[_dtab_pb2.Path, _Mapping]] = ..., dtab: _Optional[_Union[_dtab_pb2.Dtab, _Mapping]] = ...) -> None: ...

class BoundTreeRsp(_message.Message):
    __slots__ = ("tree",)
    TREE_FIELD_NUMBER: _ClassVar[int]
    tree: BoundNameTree
    def __init__(self, tree: _Optional[_Union[BoundNameTree, _Mapping]] = ...) -> None: ...

class BoundNameTree(_message.Message):
    __slots__ = ("neg", "fail", "empty", "alt", "union", "leaf")
    class Neg(_message.Message):
        __slots__ = ()
        def __init__(self) -> None: ...
    class Fail(_message.Message):
        __slots__ = ()
        def __init__(self) -> None: ...
    class Empty(_message.Message):
        __slots__ = ()
        def __init__(self) -> None: ...
    class Alt(_message.Message):
        __slots__ = ("trees",)
        TREES_FIELD_NUMBER: _ClassVar[int]
        trees: _containers.RepeatedCompositeFieldContainer[BoundNameTree]
        def __init__(self, trees: _Optional[_Iterable[_Union[BoundNameTree, _Mapping]]] = ...) -> None: ...
    class Union(_message.Message):
        __slots__ = ("trees",)
        class Weighted(_message.Message):
            __slots__ = ("weight", "tree")
            WEIGHT_FIELD_NUMBER: _ClassVar[int]
            TREE_FIELD_NUMBER: _ClassVar[int]
            weight: float
            tree: BoundNameTree
            def __init__(self, weight: _Optional[float] = ..., tree: _Optional[_Union[BoundNameTree, _Mapping]] = ...) -> None: ...
        TREES_FIELD_NUMBER: _ClassVar[int]
        trees: _containers.RepeatedCompositeFieldContainer[BoundNameTree.Union.Weighted]
        def __init__(self, trees: _Optional[_Iterable[_Union[BoundNameTree.Union.Weighted, _Mapping]]] = ...) -> None: ...
    class Leaf(_message.Message):
        __slots__ = ("id", "residual")
        ID_FIELD_NUMBER: _ClassVar[int]
        RESIDUAL_FIELD_NUMBER: _ClassVar[int]
        id: _dtab_pb2.Path
        residual: _dtab_pb2.Path
        def __init__(self, id: _Optional[_Union[_dtab_pb2.Path, _Mapping]] = ..., residual: _Optional[_Union[_dtab_pb2.Path, _Mapping]] = ...) -> None: ...
    NEG_FIELD_NUMBER: _ClassVar[int]
    FAIL_FIELD_NUMBER: _ClassVar[int]
    EMPTY_FIELD_NUMBER: _ClassVar[int]
    ALT_FIELD_NUMBER: _ClassVar[int]
    UNION_FIELD_NUMBER: _ClassVar[int]
    LEAF_FIELD_NUMBER: _ClassVar[int]
    neg: BoundNameTree.Neg
    fail: BoundNameTree.Fail
    empty: BoundNameTree.Empty
    alt: BoundNameTree.Alt
    union: BoundNameTree.Union
    leaf: BoundNameTree.Leaf
    def __init__(self, neg: _Optional[_Union[BoundNameTree.Neg, _Mapping]] = ..., fail: _Optional[_Union[BoundNameTree.Fail, _Mapping]] = ..., empty: _Optional[_Union[BoundNameTree.Empty, _Mapping]] = ..., alt: _Optional[_Union[BoundNameTree.Alt, _Mapping]] = ..., union: _Optional[_Union[BoundNameTree.Union, _Mapping]] = ..., leaf: _Optional[_Union[BoundNameTree.Leaf, _Mapping]] = ...) -> None: ...
