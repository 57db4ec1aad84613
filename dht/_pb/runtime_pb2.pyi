from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class ExpertUID(_message.Message):
    __slots__ = ("uid",)
    UID_FIELD_NUMBER: _ClassVar[int]
    uid: str
    def __init__(self, uid: _Optional[str] = ...) -> None: ...

class ExpertInfo(_message.Message):
    __slots__ = ("serialized_info",)
    SERIALIZED_INFO_FIELD_NUMBER: _ClassVar[int]
    serialized_info: bytes
    def __init__(self, serialized_info: _Optional[bytes] = ...) -> None: ...
