"""The two small jars the stand-in builds from what PyPI gives it (test only).

1. **Relocated Jackson.** The Iceberg runtime jar in PyPI `snowpark-connect-deps-iceberg`
   (iceberg-spark-runtime-3.5_2.12) refers to Jackson under the shaded package
   `org.apache.iceberg.shaded.com.fasterxml.jackson` but does not contain it, so Iceberg fails on
   its first catalog call. `relocated_jackson_jar` rebuilds those classes from pyspark's own
   Jackson jars by rewriting the names in each class file's constant pool, which is what Maven's
   shade plugin would have done.

2. **Loopback-only Thrift port.** Spark 3.5's `ThriftHttpCLIService.initializeServer` makes its
   Jetty `ServerConnector`, calls `setPort` and never `setHost`, so the HTTP Thrift server listens
   on every interface whatever `hive.server2.thrift.bind.host` says. `loopback_thrift_jar` writes
   a copy of that class whose one `connector.setPort(port)` call becomes
   `bridge.standin.Loopback.bind(connector, port)` (same operands, same length: no other byte of
   the method moves), plus that 12-byte static method, which calls `setHost("127.0.0.1")` and then
   `setPort(port)`. Put first on the driver class path, the copy replaces Spark's class.

Both edit class files at the byte level instead of compiling Java, because the machines that run
the stand-in have a Java runtime, not a compiler.
"""

from __future__ import annotations

import struct
import zipfile
from dataclasses import dataclass
from pathlib import Path

# Constant-pool entry sizes after the tag byte (JVMS 4.4), for every tag but 1 (Utf8, variable).
_CP_SIZES = {3: 4, 4: 4, 5: 8, 6: 8, 7: 2, 8: 2, 9: 4, 10: 4, 11: 4, 12: 4, 15: 3, 16: 2, 17: 4, 18: 4, 19: 2, 20: 2}
UTF8, CLASS, STRING, FIELDREF, METHODREF, NAME_AND_TYPE = 1, 7, 8, 9, 10, 12


@dataclass
class ClassFile:
    """A class file split at its constant pool: enough to read and append pool entries and to
    edit bytes after the pool in place."""

    head: bytes  # magic and version
    entries: list[tuple[int, bytes]]  # (tag, payload) per slot; long/double's second slot is (0, b"")
    rest: bytes  # everything after the pool

    @classmethod
    def parse(cls, data: bytes) -> ClassFile:
        count = struct.unpack(">H", data[8:10])[0]
        entries: list[tuple[int, bytes]] = [(0, b"")]  # slot 0 is unused
        i = 10
        while len(entries) < count:
            tag = data[i]
            size = 2 + struct.unpack(">H", data[i + 1:i + 3])[0] if tag == UTF8 else _CP_SIZES[tag]
            entries.append((tag, data[i + 1:i + 1 + size]))
            if tag in (5, 6):  # long and double take two slots
                entries.append((0, b""))
            i += 1 + size
        return cls(data[:8], entries, data[i:])

    def serialize(self) -> bytes:
        pool = b"".join(bytes([tag]) + payload for tag, payload in self.entries[1:] if tag)
        return self.head + struct.pack(">H", len(self.entries)) + pool + self.rest

    def _ref(self, index: int, slot: int = 0) -> int:
        return int(struct.unpack(">H", self.entries[index][1][2 * slot:2 * slot + 2])[0])

    def utf8(self, index: int) -> str:
        return self.entries[index][1][2:].decode("utf-8")

    def member(self, index: int) -> tuple[str, str, str]:
        """A Fieldref or Methodref as (class, name, descriptor)."""
        nat = self._ref(index, 1)
        return (self.utf8(self._ref(self._ref(index, 0))), self.utf8(self._ref(nat, 0)), self.utf8(self._ref(nat, 1)))

    def find(self, tag: int, owner: str, name: str, descriptor: str) -> int:
        found = [i for i, (t, _) in enumerate(self.entries) if t == tag and self.member(i) == (owner, name, descriptor)]
        if len(found) != 1:
            raise ValueError(f"expected one constant for {owner}.{name}{descriptor}, found {len(found)}")
        return found[0]

    def add(self, tag: int, payload: bytes) -> int:
        self.entries.append((tag, payload))
        return len(self.entries) - 1

    def add_utf8(self, text: str) -> int:
        raw = text.encode("utf-8")
        return self.add(UTF8, struct.pack(">H", len(raw)) + raw)

    def add_methodref(self, owner: str, name: str, descriptor: str) -> int:
        klass = self.add(CLASS, struct.pack(">H", self.add_utf8(owner)))
        nat = self.add(NAME_AND_TYPE, struct.pack(">HH", self.add_utf8(name), self.add_utf8(descriptor)))
        return self.add(METHODREF, struct.pack(">HH", klass, nat))


# -- 1. Jackson, relocated -------------------------------------------------------------------------
_JACKSON = (b"com/fasterxml/jackson/", b"com.fasterxml.jackson.")
_SHADED = (b"org/apache/iceberg/shaded/com/fasterxml/jackson/", b"org.apache.iceberg.shaded.com.fasterxml.jackson.")


def _relocate(text: bytes) -> bytes:
    for old, new in zip(_JACKSON, _SHADED, strict=True):
        text = text.replace(old, new)
    return text


def relocate_class(data: bytes) -> bytes:
    """Every Utf8 constant renamed: class names, descriptors and string constants (Jackson looks
    some classes up by name)."""
    klass = ClassFile.parse(data)
    for i, (tag, payload) in enumerate(klass.entries):
        if tag == UTF8:
            text = _relocate(payload[2:])
            klass.entries[i] = (UTF8, struct.pack(">H", len(text)) + text)
    return klass.serialize()


def relocated_jackson_jar(out: Path, jars: list[Path]) -> int:
    """Write `out` from pyspark's Jackson jars; returns the number of entries written."""
    seen: set[str] = set()
    tmp = out.with_suffix(".tmp")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as dst:
        for src in jars:
            with zipfile.ZipFile(src) as jar:
                for entry in jar.infolist():
                    name = entry.filename
                    # Multi-release copies and module descriptors would name the unshaded packages.
                    if entry.is_dir() or name.startswith("META-INF/versions/") or name.endswith("module-info.class"):
                        continue
                    if name.endswith(".class"):
                        data = relocate_class(jar.read(name))
                    elif name.startswith(("META-INF/services/", "com/fasterxml/")):
                        data = _relocate(jar.read(name))
                    else:
                        continue  # manifests, licences, Maven metadata
                    name = _relocate(name.encode()).decode()
                    if name not in seen:
                        seen.add(name)
                        dst.writestr(name, data)
    tmp.replace(out)
    return len(seen)


# -- 2. the Thrift HTTP port on loopback only ------------------------------------------------------
THRIFT_HTTP_CLASS = "org/apache/hive/service/cli/thrift/ThriftHttpCLIService"
_CONNECTOR = "org/sparkproject/jetty/server/ServerConnector"
_HELPER = "bridge/standin/Loopback"
_BIND = ("bind", f"(L{_CONNECTOR};I)V")
LOOPBACK = "127.0.0.1"
_GETFIELD, _INVOKEVIRTUAL, _INVOKESTATIC = 0xB4, 0xB6, 0xB8


def patch_thrift_http_service(data: bytes) -> bytes:
    """`aload connector; aload_0; getfield portNum; invokevirtual setPort` becomes the same with
    `invokestatic Loopback.bind`: both take (connector, int) off the stack and leave nothing."""
    klass = ClassFile.parse(data)
    set_port = klass.find(METHODREF, _CONNECTOR, "setPort", "(I)V")
    port_field = klass.find(FIELDREF, THRIFT_HTTP_CLASS, "portNum", "I")
    call = bytes([_GETFIELD]) + struct.pack(">H", port_field) + bytes([_INVOKEVIRTUAL]) + struct.pack(">H", set_port)
    if klass.rest.count(call) != 1:
        raise ValueError(f"{THRIFT_HTTP_CLASS}: the connector.setPort(portNum) call is not where expected "
                         f"(found {klass.rest.count(call)} times); was pyspark upgraded?")
    bind = klass.add_methodref(_HELPER, *_BIND)
    patched = call[:3] + bytes([_INVOKESTATIC]) + struct.pack(">H", bind)
    klass.rest = klass.rest.replace(call, patched)
    return klass.serialize()


def loopback_helper_class() -> bytes:
    """`public final class bridge.standin.Loopback { public static void bind(ServerConnector c,
    int port) { c.setHost("127.0.0.1"); c.setPort(port); } }`, written out by hand. Its code has
    no branches, so Java 8 class files need no StackMapTable for it; it is never instantiated,
    so it has no constructor."""
    klass = ClassFile(b"\xca\xfe\xba\xbe\x00\x00\x00\x34", [(0, b"")], b"")  # version 52: Java 8
    this = klass.add(CLASS, struct.pack(">H", klass.add_utf8(_HELPER)))
    base = klass.add(CLASS, struct.pack(">H", klass.add_utf8("java/lang/Object")))
    name, descriptor, code_name = klass.add_utf8(_BIND[0]), klass.add_utf8(_BIND[1]), klass.add_utf8("Code")
    set_host = klass.add_methodref(_CONNECTOR, "setHost", "(Ljava/lang/String;)V")
    set_port = klass.add_methodref(_CONNECTOR, "setPort", "(I)V")
    host = klass.add(STRING, struct.pack(">H", klass.add_utf8(LOOPBACK)))
    if host > 255:
        raise AssertionError("ldc needs a one-byte index")
    code = (b"\x2a" + bytes([0x12, host]) + bytes([_INVOKEVIRTUAL]) + struct.pack(">H", set_host)  # c.setHost(...)
            + b"\x2a\x1b" + bytes([_INVOKEVIRTUAL]) + struct.pack(">H", set_port)  # c.setPort(port)
            + b"\xb1")  # return
    code_attribute = struct.pack(">HHI", 2, 2, len(code)) + code + struct.pack(">HH", 0, 0)
    method = (struct.pack(">HHHH", 0x0009, name, descriptor, 1)  # public static, one attribute
              + struct.pack(">HI", code_name, len(code_attribute)) + code_attribute)
    klass.rest = (struct.pack(">HHH", 0x0031, this, base)  # public final super
                  + struct.pack(">HHH", 0, 0, 1) + method  # no interfaces, no fields, one method
                  + struct.pack(">H", 0))  # no attributes
    return klass.serialize()


def loopback_thrift_jar(out: Path, thriftserver_jar: Path) -> None:
    """Write `out`: the patched ThriftHttpCLIService and its helper."""
    with zipfile.ZipFile(thriftserver_jar) as jar:
        original = jar.read(THRIFT_HTTP_CLASS + ".class")
    tmp = out.with_suffix(".tmp")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as dst:
        dst.writestr(THRIFT_HTTP_CLASS + ".class", patch_thrift_http_service(original))
        dst.writestr(_HELPER + ".class", loopback_helper_class())
    tmp.replace(out)
