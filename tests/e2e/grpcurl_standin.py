#!/usr/bin/python3
"""A stand-in for grpcurl, for running the documentation's grpcurl examples.

The build machines have no grpcurl, so tests/e2e/api_examples_test.py runs the
examples of docs/api.md through this script instead. It holds itself to
grpcurl's rule: it knows nothing about fanout except what server reflection
(grpc.reflection.v1alpha) tells it, and it prints what grpcurl prints:

  grpcurl -plaintext ADDR list [SERVICE]
  grpcurl -plaintext ADDR describe [SYMBOL]
  grpcurl -plaintext [-d DATA|-d @] [-emit-defaults] [-max-time SECONDS]
          [-connect-timeout SECONDS] ADDR SERVICE/METHOD

- Requests are proto3 JSON (google.protobuf.json_format, which accepts
  lowerCamelCase and original field names). `-d @` reads them from stdin; several
  requests are concatenated JSON objects, as grpcurl takes them, and are sent
  as they are read (client and bidi streaming).
- Each response is printed as indented JSON with lowerCamelCase names,
  64-bit integers as strings and zero values left out (unless -emit-defaults),
  as it arrives (server streaming).
- A failed call prints, on stderr, `ERROR:\n  Code: NotFound\n  Message: ...`
  with grpc-go's code names, and exits with 64 + the status code, like grpcurl.
  A -max-time that runs out is DeadlineExceeded "context deadline exceeded",
  grpc-go's message for a client-side deadline. (-max-time bounds the call;
  grpcurl's also counts connecting and reflection, which take milliseconds
  there but can take longer here, on a loaded test machine.)
- `describe` prints what grpcurl's printer (protoprint: compact, elements
  sorted, fully qualified type names) prints for services, methods, messages
  (fields, oneofs, maps, nested messages and enums) and enums.

Not grpcurl: no TLS (-plaintext is required), no -proto/-protoset, no headers,
no text format, no proto3 `optional`.

For tests only: when GRPCURL_STANDIN_OPENED names a file, a streaming call
creates it once the server has sent the response headers, so a test knows
when a Watch is in place and may publish.

Runs with /usr/bin/python3 (Debian's grpcio and protobuf), protoc and
/usr/share/grpc-proto.
"""

import json
import os
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


def field_line(field):
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


def print_response(message, emit_defaults):
    text = json_format.MessageToJson(message, including_default_value_fields=emit_defaults,
                                     indent=2, ensure_ascii=False)
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


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
            print_response(response, emit)
        elif not proto.client_streaming:
            call = channel.unary_stream(path, **kwargs)(single_request(),
                                                        timeout=deadline.remaining())
            signal_opened(call)
            for response in call:
                print_response(response, emit)
        elif not proto.server_streaming:
            response = channel.stream_unary(path, **kwargs)(requests, timeout=deadline.remaining())
            print_response(response, emit)
        else:
            call = channel.stream_stream(path, **kwargs)(requests, timeout=deadline.remaining())
            signal_opened(call)
            for response in call:
                print_response(response, emit)
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
