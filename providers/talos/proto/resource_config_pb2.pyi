from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class MachineConfigSpec(_message.Message):
    __slots__ = ("yaml_marshalled",)
    YAML_MARSHALLED_FIELD_NUMBER: _ClassVar[int]
    yaml_marshalled: bytes
    def __init__(self, yaml_marshalled: _Optional[bytes] = ...) -> None: ...
