#!/usr/bin/python3
"""A stand-in for grpcurl, for running the documentation's grpcurl examples.

The build machines have no grpcurl, so tests/e2e/api_examples_test.py and
reflection_test.py run the examples of docs/api.md and README.md through this
script instead. It holds itself to grpcurl's rule: it knows nothing about
fanout except what server reflection (grpc.reflection.v1alpha, as grpcurl
1.8.0 asks) tells it, and it prints what grpcurl 1.8.0 prints, byte for byte:

  grpcurl -plaintext ADDR list [SERVICE]
  grpcurl -plaintext ADDR describe [SYMBOL]
  grpcurl -plaintext [-d DATA|-d @] [-emit-defaults] [-max-time SECONDS]
          [-connect-timeout SECONDS] ADDR SERVICE/METHOD

- Requests are proto3 JSON (google.protobuf.json_format, which like grpcurl
  accepts a field's JSON name and its proto name). `-d @` reads them from
  stdin; several requests are concatenated JSON objects, as grpcurl takes
  them, and are sent as they are read (client and bidi streaming).
- Each response is printed as it arrives (server streaming), the way grpcurl
  1.8.0's formatter writes it; "responses, as grpcurl prints them" below says
  which lines of grpcurl and of its libraries this follows. In short: field
  names are the json_name of the descriptors the server sent, or the proto
  names when those have none, never computed; 64-bit integers are strings;
  zero values are left out (unless -emit-defaults); an empty message prints as
  "{", a line of two spaces, "}".
- A failed call prints, on stderr, `ERROR:\n  Code: NotFound\n  Message: ...`
  with grpc-go's code names, and exits with 64 + the status code, like grpcurl
  (format.go, PrintStatus). A -max-time that runs out is DeadlineExceeded
  "context deadline exceeded", grpc-go's message for a client-side deadline.
  (-max-time bounds the call; grpcurl's also counts connecting and reflection,
  which take milliseconds there but can take longer here, on a loaded test
  machine.)
- `describe` prints what grpcurl's printer (protoprint: compact, elements
  sorted, fully qualified type names) prints for services, methods, messages
  (fields, oneofs, maps, nested messages and enums) and enums.

Not grpcurl: no TLS (-plaintext is required), no -proto/-protoset, no headers,
no text format, no proto3 `optional`; what it cannot print as grpcurl would
(extensions, most well-known types, json_name options in `describe`) fails
rather than prints something else.

For tests only: when GRPCURL_STANDIN_OPENED names a file, a streaming call
creates it once the server has sent the response headers, so a test knows
when a Watch is in place and may publish. `format_response` and `JsonNames`
may be imported, for tests of the printing itself.

Runs with /usr/bin/python3 (Debian's grpcio and protobuf), protoc and
/usr/share/grpc-proto.
"""

import base64
import datetime
import decimal
import json
import math
import os
import struct
import subprocess
import sys
import tempfile
import threading
import time

import grpc
from google.protobuf import (descriptor, descriptor_pb2, descriptor_pool, json_format,
                             message_factory)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import e2e_support  # noqa: E402

GRPC_PROTO_ROOT = "/usr/share/grpc-proto"
REFLECTION_PROTO = "grpc/reflection/v1alpha/reflection.proto"
REFLECTION_METHOD = "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"
STATUS_CODE_OFFSET = 64  # grpcurl exits with 64 + the gRPC status code

BOOL_FLAGS = {"plaintext", "emit-defaults"}
VALUE_FLAGS = {"d", "max-time", "connect-timeout"}


class Failure(Exception):
    """Ends the program: a message for stderr and an exit status."""

    def __init__(self, message, status=1):
        super().__init__(message)
        self.status = status


def message_class(factory, descriptor):
    if hasattr(message_factory, "GetMessageClass"):
        return message_factory.GetMessageClass(descriptor)
    return factory.GetPrototype(descriptor)


# --- command line --------------------------------------------------------------

def parse_args(argv):
    """Go flag rules: flags first, -flag or --flag, values as next arg or after '='."""
    flags = {}
    args = list(argv)
    while args and args[0].startswith("-") and args[0] not in ("-", "--"):
        name = args.pop(0).lstrip("-")
        value = None
        if "=" in name:
            name, value = name.split("=", 1)
        if name in BOOL_FLAGS:
            flags[name] = value in (None, "true", "1")
        elif name in VALUE_FLAGS:
            if value is None:
                if not args:
                    raise Failure(f"flag needs an argument: -{name}", 2)
                value = args.pop(0)
            flags[name] = value
        else:
            raise Failure(f"flag provided but not defined: -{name}\n"
                          f"(this grpcurl stand-in supports: "
                          f"{' '.join('-' + f for f in sorted(BOOL_FLAGS | VALUE_FLAGS))})", 2)
    if args and args[0] == "--":
        args.pop(0)
    return flags, args


def seconds(flags, name):
    if name not in flags:
        return None
    try:
        value = float(flags[name])
    except ValueError:
        raise Failure(f'invalid value "{flags[name]}" for flag -{name}', 2)
    return value if value > 0 else None


# --- reflection ----------------------------------------------------------------

def reflection_classes(tmp):
    """Message classes of grpc.reflection.v1alpha, compiled from the .proto."""
    out = os.path.join(tmp, "reflection.pb")
    subprocess.run(["protoc", f"-I{GRPC_PROTO_ROOT}", "--include_imports",
                    f"--descriptor_set_out={out}", REFLECTION_PROTO], check=True)
    fds = descriptor_pb2.FileDescriptorSet.FromString(open(out, "rb").read())
    pool = descriptor_pool.DescriptorPool()
    for fdp in fds.file:
        pool.Add(fdp)
    factory = message_factory.MessageFactory(pool)
    find = lambda name: message_class(factory, pool.FindMessageTypeByName(name))
    return (find("grpc.reflection.v1alpha.ServerReflectionRequest"),
            find("grpc.reflection.v1alpha.ServerReflectionResponse"))


class Reflection:
    """What grpcurl learns from the server: services and a descriptor pool."""

    def __init__(self, channel, tmp, timeout):
        self.request_class, response_class = reflection_classes(tmp)
        self.rpc = channel.stream_stream(
            REFLECTION_METHOD, request_serializer=self.request_class.SerializeToString,
            response_deserializer=response_class.FromString)
        self.timeout = timeout
        self.pool = descriptor_pool.DescriptorPool()
        self.factory = message_factory.MessageFactory(self.pool)
        self.files = {}  # name -> FileDescriptorProto, as the server sent them

    def _ask(self, **request):
        try:
            response = next(iter(self.rpc(iter([self.request_class(**request)]),
                                          timeout=self.timeout)))
        except grpc.RpcError as e:
            raise Failure(f"server reflection failed: {code_name(e.code())}: {e.details()}")
        if response.HasField("error_response"):
            return None, response.error_response.error_message
        return response, None

    def list_services(self):
        response, error = self._ask(list_services="")
        if error:
            raise Failure(f"Failed to list services: {error}")
        return sorted(s.name for s in response.list_services_response.service)

    def load_symbol(self, symbol):
        """Loads the file that defines `symbol`; False when the server knows no such symbol."""
        response, error = self._ask(file_containing_symbol=symbol)
        if error:
            return False
        self._add_files(response.file_descriptor_response.file_descriptor_proto)
        return True

    def _add_files(self, serialized):
        def fetch(dep, importer):
            response, error = self._ask(file_by_filename=dep)
            if error:
                raise Failure(f"Failed to resolve dependency {dep} of {importer.name}: {error}")
            return response.file_descriptor_response.file_descriptor_proto
        e2e_support.add_file_descriptors(self.files, serialized,
                                         descriptor_pb2.FileDescriptorProto.FromString, fetch,
                                         self.pool.Add, Failure)

    def find(self, symbol):
        """The descriptor named `symbol` (service, method, message, enum), or None."""
        for lookup in (self.pool.FindServiceByName, self.pool.FindMessageTypeByName,
                       self.pool.FindEnumTypeByName):
            try:
                return lookup(symbol)
            except KeyError:
                pass
        if "." in symbol:
            parent, name = symbol.rsplit(".", 1)
            try:
                service = self.pool.FindServiceByName(parent)
            except KeyError:
                return None
            return service.methods_by_name.get(name)
        return None

    def method_proto(self, method):
        """The MethodDescriptorProto of `method`: the streaming flags live there."""
        return e2e_support.method_proto(self.files, method, Failure)

    def message_class(self, descriptor):
        return message_class(self.factory, descriptor)


# --- describe, as grpcurl's protoprint prints ------------------------------------

SCALAR_NAMES = {getattr(descriptor_pb2.FieldDescriptorProto, n): n[len("TYPE_"):].lower()
                for n in descriptor_pb2.FieldDescriptorProto.Type.keys()}


def type_name(field):
    if field.message_type is not None:
        return "." + field.message_type.full_name
    if field.enum_type is not None:
        return "." + field.enum_type.full_name
    return SCALAR_NAMES[field.type]


def is_map(field):
    return (field.message_type is not None and field.label == field.LABEL_REPEATED
            and field.message_type.GetOptions().map_entry)


def default_json_name(name):
    """protoc's lowerCamelCase name of a field (underscores out, next letter up)."""
    parts = name.split("_")
    return parts[0] + "".join(p[:1].upper() + p[1:] for p in parts[1:])


def field_line(field):
    if field.json_name != default_json_name(field.name):
        # protoprint adds a [json_name = ...] option here; fanout has none.
        raise Failure(f"this grpcurl stand-in does not describe {field.full_name}'s "
                      f"json_name {field.json_name!r}")
    if is_map(field):
        key = field.message_type.fields_by_name["key"]
        value = field.message_type.fields_by_name["value"]
        return f"map<{type_name(key)}, {type_name(value)}> {field.name} = {field.number};"
    label = "repeated " if field.label == field.LABEL_REPEATED else ""
    return f"{label}{type_name(field)} {field.name} = {field.number};"


def message_lines(message, indent):
    pad = "  " * indent
    lines = [f"{pad}message {message.name} {{"]
    # Fields and oneofs by tag, a oneof placed at its smallest tag.
    items = []
    for field in message.fields:
        if field.containing_oneof is None:
            items.append((field.number, [f"{pad}  {field_line(field)}"]))
    for oneof in message.oneofs:
        body = [f"{pad}  oneof {oneof.name} {{"]
        body += [f"{pad}    {field_line(f)}" for f in sorted(oneof.fields, key=lambda f: f.number)]
        body.append(f"{pad}  }}")
        items.append((min(f.number for f in oneof.fields), body))
    for _, body in sorted(items, key=lambda item: item[0]):
        lines += body
    for nested in sorted(message.nested_types, key=lambda m: m.name):
        if not nested.GetOptions().map_entry:
            lines += message_lines(nested, indent + 1)
    for enum in sorted(message.enum_types, key=lambda e: e.name):
        lines += enum_lines(enum, indent + 1)
    lines.append(f"{pad}}}")
    return lines


def enum_lines(enum, indent):
    pad = "  " * indent
    lines = [f"{pad}enum {enum.name} {{"]
    for value in sorted(enum.values, key=lambda v: (v.number, v.name)):
        lines.append(f"{pad}  {value.name} = {value.number};")
    lines.append(f"{pad}}}")
    return lines


def method_line(reflection, method):
    proto = reflection.method_proto(method)
    request = ("stream " if proto.client_streaming else "") + "." + method.input_type.full_name
    response = ("stream " if proto.server_streaming else "") + "." + method.output_type.full_name
    return f"rpc {method.name} ( {request} ) returns ( {response} );"


def describe(reflection, symbol):
    d = reflection.find(symbol)
    if isinstance(d, descriptor.ServiceDescriptor):
        lines = [f"{d.full_name} is a service:", f"service {d.name} {{"]
        lines += ["  " + method_line(reflection, m) for m in sorted(d.methods, key=lambda m: m.name)]
        return "\n".join(lines + ["}"])
    if isinstance(d, descriptor.MethodDescriptor):
        return f"{d.full_name} is a method:\n{method_line(reflection, d)}"
    if isinstance(d, descriptor.Descriptor):
        return "\n".join([f"{d.full_name} is a message:"] + message_lines(d, 0))
    if isinstance(d, descriptor.EnumDescriptor):
        return "\n".join([f"{d.full_name} is an enum:"] + enum_lines(d, 0))
    raise Failure(f'Failed to resolve symbol "{symbol}": Symbol not found: {symbol}')


# --- responses, as grpcurl prints them -------------------------------------------
# grpcurl 1.8.0 prints each response with golang/protobuf v1.3.5's
# jsonpb.Marshaler{EmitDefaults: -emit-defaults, Indent: "  "} (format.go,
# NewJSONFormatter) and a newline (format.go, DefaultEventHandler.
# OnReceiveResponse: fmt.Fprintln). The response is a jhump/protoreflect v1.6.1
# dynamic.Message, built only from the descriptors reflection sent (invoke.go,
# InvokeRPC), and it implements jsonpb.JSONPBMarshaler, so jsonpb writes out what
# the message's MarshalJSONPB returns (jsonpb.go, marshalObject) and the text
# below is protoreflect's dynamic/json.go and dynamic/indent.go at v1.6.1:
#
# - A field's name (json.go, marshalKnownFieldJSON) is the json_name of the
#   FieldDescriptorProto the server sent, or, when that has none (or an empty
#   one), the field's proto name. Nothing computes lowerCamelCase: a server whose
#   descriptors lack json_name gets "node_id". So JsonNames reads the protos as
#   received, never the Python descriptors (which compute a json_name).
# - Fields in tag order; present ones only, or with -emit-defaults every field
#   but unset oneof members (json.go, marshalJSON: knownFieldTags,
#   allKnownFieldTags); a default message is null, a default list or map empty.
# - Layout (indent.go, indentBuffer): an object or list opens with "{" or "[",
#   a newline and the indent one level deeper; elements are separated by ","
#   and a newline at that indent; it closes with a newline at the outer indent
#   and "}" or "]", even when empty. An empty message therefore prints as three
#   lines: "{", two spaces, "}". Keys and values are separated by ": ".
# - Values (json.go, marshalKnownFieldValueJSON): 64-bit integers as strings,
#   32-bit as numbers, enums by name (a number without one), bools, bytes as
#   standard base64, floats as strconv.FormatFloat(f, 'g', -1, bits) and
#   "NaN"/"Infinity"/"-Infinity", strings as Go's json.Marshal writes them
#   (writeJsonString); map keys sorted, then escaped as dynamic/text.go's
#   writeString does. google.protobuf.Timestamp and Duration go through jsonpb
#   (json.go, marshalWellKnownType; jsonpb.go: 0, 3, 6 or 9 fractional digits).
# Not done here, and refused rather than guessed: extensions and the other
# well-known types (Any, Struct, Value, wrappers, Empty): fanout uses none.
#
# The lines read, at those tags (read, not copied):
#   fullstorydev/grpcurl v1.8.0   format.go 136-143 (NewJSONFormatter), 469-482
#                                 (OnReceiveResponse), 497-502 (PrintStatus);
#                                 invoke.go 122-138 (dynamic messages from the
#                                 reflected descriptors)
#   golang/protobuf v1.3.5        jsonpb/jsonpb.go 128-149 (Marshal), 174-201
#                                 (marshalObject hands a JSONPBMarshaler its own
#                                 output), 219-266 (Duration, Timestamp)
#   jhump/protoreflect v1.6.1     dynamic/json.go 103-182 (MarshalJSONPB,
#                                 marshalJSON), 184-202 (well-known types),
#                                 204-313 (marshalKnownFieldJSON; 205-213 the
#                                 name), 323-342 (map key order), 356-380 (map
#                                 entries), 382-490 (values, writeJsonString);
#                                 dynamic/indent.go 1-76; dynamic/text.go 330-364
#                                 (writeString); desc/descriptor.go 582-589
#                                 (defaults of lists, maps and messages)

FieldType = descriptor.FieldDescriptor
INT64_TYPES = {FieldType.TYPE_INT64, FieldType.TYPE_SINT64, FieldType.TYPE_SFIXED64,
               FieldType.TYPE_UINT64, FieldType.TYPE_FIXED64}
INT32_TYPES = {FieldType.TYPE_INT32, FieldType.TYPE_SINT32, FieldType.TYPE_SFIXED32,
               FieldType.TYPE_UINT32, FieldType.TYPE_FIXED32}


class JsonNames:
    """What grpcurl calls each field in JSON, read from the FileDescriptorProtos
    the server sent: json_name when it is there, else the proto name."""

    def __init__(self, files):
        self.names = {}  # (message full name, field number) -> name
        for fdp in files.values():
            for message in fdp.message_type:
                self._add(fdp.package, message)

    def _add(self, scope, message):
        full_name = f"{scope}.{message.name}" if scope else message.name
        for field in message.field:
            self.names[(full_name, field.number)] = field.json_name or field.name
        for nested in message.nested_type:
            self._add(full_name, nested)

    def __call__(self, field):
        return self.names[(field.containing_type.full_name, field.number)]


def go_json_string(text):
    """A string as Go's encoding/json writes it: HTML-safe (<, >, & escaped), \\u2028
    and \\u2029 escaped, other control characters as \\u00XX (\\b and \\f too: Go
    before 1.22, such as Debian 12's 1.19, has no short form for them)."""
    out = ['"']
    for ch in text:
        code = ord(ch)
        if ch in '"\\':
            out.append("\\" + ch)
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\r":
            out.append("\\r")
        elif ch == "\t":
            out.append("\\t")
        elif code < 0x20 or ch in "<>&" or code in (0x2028, 0x2029):
            out.append(f"\\u{code:04x}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def go_text_string(text):
    """A map key as protoreflect's dynamic/text.go writeString writes it: bytes
    outside printable ASCII as octal escapes."""
    escapes = {ord("\n"): "\\n", ord("\r"): "\\r", ord("\t"): "\\t", ord('"'): '\\"',
               ord("\\"): "\\\\"}
    out = ['"']
    for b in text.encode("utf-8"):
        if b in escapes:
            out.append(escapes[b])
        elif 0x20 <= b < 0x7F:
            out.append(chr(b))
        else:
            out.append(f"\\{b:03o}")
    out.append('"')
    return "".join(out)


def go_format_float(value, bits):
    """strconv.FormatFloat(value, 'g', -1, bits): the shortest digits that read
    back as the same value, in %e form when the decimal exponent is below -4 or
    at least 6 (Go decides with precision 6 for the shortest form): 1e+06,
    1.5e-05, 123456.7."""
    if math.isnan(value):
        return '"NaN"'
    if math.isinf(value):
        return '"Infinity"' if value > 0 else '"-Infinity"'
    sign = "-" if math.copysign(1.0, value) < 0 else ""
    value = abs(value)
    if value == 0:
        return sign + "0"
    if bits == 32:
        for precision in range(1, 10):
            text = f"{value:.{precision - 1}e}"
            try:
                if struct.unpack("<f", struct.pack("<f", float(text)))[0] == value:
                    break
            except OverflowError:  # rounded past the largest float32
                pass
    else:
        text = repr(value)
    digits, exponent = decimal.Decimal(text).normalize().as_tuple()[1:]
    digits = "".join(map(str, digits))
    point = len(digits) + exponent  # value = 0.DIGITS x 10^point
    exp = point - 1
    if exp < -4 or exp >= 6:
        mantissa = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
        return f"{sign}{mantissa}e{'-' if exp < 0 else '+'}{abs(exp):02d}"
    if point <= 0:
        return f"{sign}0.{'0' * -point}{digits}"
    if point >= len(digits):
        return sign + digits + "0" * (point - len(digits))
    return f"{sign}{digits[:point]}.{digits[point:]}"


def jsonpb_fraction(seconds, nanos):
    """jsonpb's 0, 3, 6 or 9 fractional digits of a Timestamp or Duration."""
    text = f"{seconds}.{nanos:09d}"
    for suffix in ("000", "000", ".000"):
        if text.endswith(suffix):
            text = text[:-len(suffix)]
    return text


class GrpcurlJson:
    """Writes one message as grpcurl 1.8.0 prints it (see above)."""

    INDENT = "  "

    def __init__(self, names, emit_defaults):
        self.names = names
        self.emit_defaults = emit_defaults
        self.out = []
        self.depth = 0

    def format(self, message):
        self.out, self.depth = [], 0
        self.message(message)
        return "".join(self.out)

    # indentBuffer: start, end, next.
    def _open(self, bracket):
        self.out.append(bracket)
        self.depth += 1
        self.out.append("\n" + self.INDENT * self.depth)

    def _close(self, bracket):
        self.depth -= 1
        self.out.append("\n" + self.INDENT * self.depth)
        self.out.append(bracket)

    def _next(self, first):
        if not first:
            self.out.append(",\n" + self.INDENT * self.depth)

    def fields(self, message):
        present = {}
        for field, value in message.ListFields():
            if field.is_extension:
                raise Failure(f"this grpcurl stand-in does not print extensions "
                              f"({field.full_name})")
            present[field.number] = (field, value)
        if not self.emit_defaults:
            return [present[n] for n in sorted(present)]
        result = []
        for field in sorted(message.DESCRIPTOR.fields, key=lambda f: f.number):
            if field.number in present:
                result.append(present[field.number])
            elif field.containing_oneof is None:
                result.append((field, None if field.message_type is not None
                               and field.label != field.LABEL_REPEATED
                               else getattr(message, field.name)))
        return result

    def message(self, message):
        name = message.DESCRIPTOR.full_name
        if name == "google.protobuf.Timestamp":
            if not 0 <= message.nanos < 10**9:
                raise Failure(f"Timestamp nanos out of range: {message.nanos}")
            when = datetime.datetime(1970, 1, 1) + datetime.timedelta(seconds=message.seconds)
            text = jsonpb_fraction(0, message.nanos)[1:]  # "" or ".123" ...
            self.out.append(f'"{when.year:04d}-{when:%m-%dT%H:%M:%S}{text}Z"')
            return
        if name == "google.protobuf.Duration":
            seconds, nanos = message.seconds, message.nanos
            text = jsonpb_fraction(abs(seconds), abs(nanos))
            negative = seconds < 0 or nanos < 0
            self.out.append(f'"{"-" if negative else ""}{text}s"')
            return
        if name.startswith("google.protobuf.") and message.DESCRIPTOR.file.name in (
                "google/protobuf/any.proto", "google/protobuf/struct.proto",
                "google/protobuf/wrappers.proto", "google/protobuf/empty.proto"):
            raise Failure(f"this grpcurl stand-in does not print {name}")
        self._open("{")
        first = True
        for field, value in self.fields(message):
            self._next(first)
            first = False
            self.out.append(go_json_string(self.names(field)) + ": ")
            self.field(field, value)
        self._close("}")

    def field(self, field, value):
        if value is None:
            self.out.append("null")
        elif field.message_type is not None and field.message_type.GetOptions().map_entry:
            key_field = field.message_type.fields_by_name["key"]
            value_field = field.message_type.fields_by_name["value"]
            self._open("{")
            for i, key in enumerate(sorted(value)):
                self._next(i == 0)
                if key_field.type == FieldType.TYPE_BOOL:
                    key_text = "true" if key else "false"
                else:
                    key_text = str(key)
                self.out.append(go_text_string(key_text) + ": ")
                self.value(value_field, value[key])
            self._close("}")
        elif field.label == field.LABEL_REPEATED:
            self._open("[")
            for i, element in enumerate(value):
                self._next(i == 0)
                self.value(field, element)
            self._close("]")
        else:
            self.value(field, value)

    def value(self, field, value):
        kind = field.type
        if kind in INT64_TYPES:
            self.out.append(go_json_string(str(value)))
        elif kind == FieldType.TYPE_ENUM:
            known = field.enum_type.values_by_number.get(value)
            self.out.append(go_json_string(known.name) if known else str(value))
        elif kind in INT32_TYPES:
            self.out.append(str(value))
        elif kind in (FieldType.TYPE_FLOAT, FieldType.TYPE_DOUBLE):
            self.out.append(go_format_float(value, 32 if kind == FieldType.TYPE_FLOAT else 64))
        elif kind == FieldType.TYPE_BOOL:
            self.out.append("true" if value else "false")
        elif kind == FieldType.TYPE_BYTES:
            self.out.append(go_json_string(base64.b64encode(value).decode("ascii")))
        elif kind == FieldType.TYPE_STRING:
            self.out.append(go_json_string(value))
        else:
            self.message(value)


def format_response(message, names, emit_defaults=False):
    """`message` as grpcurl prints it, final newline included."""
    return GrpcurlJson(names, emit_defaults).format(message) + "\n"


def print_response(message, names, emit_defaults):
    sys.stdout.write(format_response(message, names, emit_defaults))
    sys.stdout.flush()


# --- calls ---------------------------------------------------------------------

def code_name(code):
    """grpc-go's name of a status code: NotFound, InvalidArgument, Canceled."""
    name = "".join(part.title() for part in code.name.split("_"))
    return {"Ok": "OK", "Cancelled": "Canceled"}.get(name, name)


class Deadline:
    def __init__(self, max_time):
        self.at = time.monotonic() + max_time if max_time else None

    def remaining(self):
        if self.at is None:
            return None
        return max(self.at - time.monotonic(), 0.001)


def read_json_values(stream):
    """Yields each JSON value of a stream of concatenated values, as it arrives."""
    decoder = json.JSONDecoder()
    buffer = ""
    eof = False
    while True:
        stripped = buffer.lstrip()
        if stripped:
            try:
                value, end = decoder.raw_decode(stripped)
            except json.JSONDecodeError as e:
                if eof:
                    raise Failure(f"error getting request data: {e}")
            else:
                buffer = stripped[end:]
                yield value
                continue
        elif eof:
            return
        line = stream.readline()
        if line:
            buffer += line
        else:
            eof = True


def requests_from(flags, request_class):
    data = flags.get("d")
    if data == "@":
        values = read_json_values(sys.stdin)
    elif data is not None:
        values = read_json_values(_StringLines(data))
    else:
        values = iter(())
    for value in values:
        message = request_class()
        try:
            json_format.ParseDict(value, message)
        except json_format.ParseError as e:
            raise Failure(f"error getting request data: {e}")
        yield message


class _StringLines:
    def __init__(self, text):
        self.lines = text.splitlines(keepends=True)

    def readline(self):
        return self.lines.pop(0) if self.lines else ""




def signal_opened(call):
    path = os.environ.get("GRPCURL_STANDIN_OPENED")
    if not path:
        return

    def wait():
        try:
            call.initial_metadata()
        finally:
            with open(path, "w"):
                pass
    threading.Thread(target=wait, daemon=True).start()


def invoke(channel, reflection, target, flags):
    if "/" in target:
        service_name, method_name = target.split("/", 1)
    elif "." in target:
        service_name, method_name = target.rsplit(".", 1)
    else:
        raise Failure(f'Invalid method name "{target}"')
    if not reflection.load_symbol(service_name):
        raise Failure(f'Error invoking method "{target}": target server does not expose '
                      f'service "{service_name}"')
    service = reflection.pool.FindServiceByName(service_name)
    method = service.methods_by_name.get(method_name)
    if method is None:
        raise Failure(f'Error invoking method "{target}": service "{service_name}" does not '
                      f'include a method named "{method_name}"')
    proto = reflection.method_proto(method)
    request_class = reflection.message_class(method.input_type)
    response_class = reflection.message_class(method.output_type)
    path = f"/{service_name}/{method_name}"
    kwargs = dict(request_serializer=request_class.SerializeToString,
                  response_deserializer=response_class.FromString)
    emit = flags.get("emit-defaults", False)
    names = JsonNames(reflection.files)
    requests = requests_from(flags, request_class)
    deadline = Deadline(seconds(flags, "max-time"))

    def single_request():
        items = list(requests)
        if len(items) > 1:
            kind = "unary" if not proto.server_streaming else "server-streaming"
            raise Failure(f'method "{target}" is a {kind} RPC, but request data contained '
                          f"more than 1 message")
        return items[0] if items else request_class()

    try:
        if not proto.client_streaming and not proto.server_streaming:
            response = channel.unary_unary(path, **kwargs)(single_request(),
                                                           timeout=deadline.remaining())
            print_response(response, names, emit)
        elif not proto.client_streaming:
            call = channel.unary_stream(path, **kwargs)(single_request(),
                                                        timeout=deadline.remaining())
            signal_opened(call)
            for response in call:
                print_response(response, names, emit)
        elif not proto.server_streaming:
            response = channel.stream_unary(path, **kwargs)(requests, timeout=deadline.remaining())
            print_response(response, names, emit)
        else:
            call = channel.stream_stream(path, **kwargs)(requests, timeout=deadline.remaining())
            signal_opened(call)
            for response in call:
                print_response(response, names, emit)
    except grpc.RpcError as e:
        message = e.details() or ""
        if e.code() == grpc.StatusCode.DEADLINE_EXCEEDED and message == "Deadline Exceeded":
            message = "context deadline exceeded"  # grpc-go's words for a client deadline
        sys.stdout.flush()
        sys.stderr.write(f"ERROR:\n  Code: {code_name(e.code())}\n  Message: {message}\n")
        return STATUS_CODE_OFFSET + e.code().value[0]
    return 0


def run(argv):
    flags, args = parse_args(argv)
    if not flags.get("plaintext"):
        raise Failure("this grpcurl stand-in speaks only -plaintext", 2)
    if not args:
        raise Failure("Too few arguments.", 2)
    address, rest = args[0], args[1:]
    if not rest:
        raise Failure("Too few arguments.", 2)
    channel = grpc.insecure_channel(address)
    connect_timeout = seconds(flags, "connect-timeout") or 10.0
    try:
        grpc.channel_ready_future(channel).result(timeout=connect_timeout)
    except grpc.FutureTimeoutError:
        raise Failure(f'Failed to dial target host "{address}": context deadline exceeded')
    with tempfile.TemporaryDirectory(prefix="grpcurl-standin-") as tmp:
        reflection = Reflection(channel, tmp, timeout=10.0)
        verb = rest[0]
        if verb == "list":
            if len(rest) == 1:
                print("\n".join(reflection.list_services()))
                return 0
            name = rest[1]
            if not reflection.load_symbol(name):
                raise Failure(f'Failed to list methods for service "{name}": '
                              f"Service not found: {name}")
            service = reflection.pool.FindServiceByName(name)
            print("\n".join(sorted(f"{service.full_name}.{m.name}" for m in service.methods)))
            return 0
        if verb == "describe":
            symbols = rest[1:] or reflection.list_services()
            for symbol in symbols:
                if not reflection.load_symbol(symbol):
                    raise Failure(f'Failed to resolve symbol "{symbol}": '
                                  f"Symbol not found: {symbol}")
                print(describe(reflection, symbol))
            return 0
        if len(rest) > 1:
            raise Failure("Too many arguments.", 2)
        return invoke(channel, reflection, verb, flags)


def main():
    try:
        status = run(sys.argv[1:])
    except Failure as e:
        sys.stdout.flush()
        print(e, file=sys.stderr)
        status = e.status
    except KeyboardInterrupt:
        status = 130
    except BrokenPipeError:  # `| head`: stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        status = 1
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        status = 1
    os._exit(status)  # do not wait for grpc's threads (a Watch, a half-read stdin)


if __name__ == "__main__":
    main()
