#!/usr/bin/python3
"""e2e.reflection: the README's grpcurl session, driven through server reflection.

grpcurl knows nothing about fanout but what server reflection tells it. This
test holds itself to the same rule: it compiles only grpc.reflection.v1alpha
(from /usr/share/grpc-proto), asks the server for the descriptors of every
service, builds message classes from the FileDescriptorProtos it gets back, and
then does what the README shows: list, describe, health check, publish (JSON
request with a base64 payload, as grpcurl takes it) while a real WebSocket
subscriber listens, GetStats, ListTopics, ListSubscribers, and a SIGTERM that
closes the subscriber with 1001 and exits 0. The `list` and `describe` outputs
it compares with are read from README.md's session itself.

It also checks that reflection describes the whole API: every rpc of
fanout.v1.Fanout with its types and streaming sides, and every message of
proto/fanout/v1/fanout.proto field for field (the .proto, compiled with protoc,
is used only as the reference to compare with, never to talk to the server).

Usage: /usr/bin/python3 reflection_test.py path/to/fanoutd
(Debian's grpcio, protobuf and websockets load only in /usr/bin/python3.)
"""

import asyncio
import base64
import importlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile

import grpc
import websockets
from google.protobuf import descriptor_pb2, descriptor_pool, json_format, message_factory

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import e2e_support  # noqa: E402
from e2e_support import TIMEOUT, Fanoutd, Fatal, Results  # noqa: E402

GRPC_PROTO_ROOT = "/usr/share/grpc-proto"
REFLECTION_PROTO = "grpc/reflection/v1alpha/reflection.proto"
GRPC_PYTHON_PLUGIN = "/usr/bin/grpc_python_plugin"

HERE = os.path.dirname(os.path.abspath(__file__))
README = os.path.join(HERE, "..", "..", "README.md")
PROTO_ROOT = os.path.join(HERE, "..", "..", "proto")
FANOUT_PROTO = "fanout/v1/fanout.proto"

# name: (request type, response type, client streams, server streams)
FANOUT_METHODS = {
    "Publish": ("fanout.v1.PublishRequest", "fanout.v1.PublishResponse", False, False),
    "Broadcast": ("fanout.v1.BroadcastRequest", "fanout.v1.BroadcastResponse", False, False),
    "ListSubscribers": ("fanout.v1.ListSubscribersRequest", "fanout.v1.ListSubscribersResponse",
                        False, False),
    "ListTopics": ("fanout.v1.ListTopicsRequest", "fanout.v1.ListTopicsResponse", False, False),
    "GetStats": ("fanout.v1.GetStatsRequest", "fanout.v1.GetStatsResponse", False, False),
    "PublishBatch": ("fanout.v1.PublishBatchRequest", "fanout.v1.PublishBatchResponse",
                     False, False),
    "PublishStream": ("fanout.v1.PublishRequest", "fanout.v1.PublishResult", True, True),
    "Watch": ("fanout.v1.WatchRequest", "fanout.v1.WatchEvent", False, True),
    "Disconnect": ("fanout.v1.DisconnectRequest", "fanout.v1.DisconnectResponse", False, False),
    "Subscribe": ("fanout.v1.SubscribeRequest", "fanout.v1.SubscribeResponse", False, False),
    "Unsubscribe": ("fanout.v1.UnsubscribeRequest", "fanout.v1.UnsubscribeResponse",
                    False, False),
    "GetConnection": ("fanout.v1.GetConnectionRequest", "fanout.v1.Connection", False, False),
}
# The rpcs' messages, and the messages they contain.
FANOUT_MESSAGES = sorted({t for m in FANOUT_METHODS.values() for t in m[:2]} | {
    "fanout.v1.Subscriber", "fanout.v1.TopicInfo"})
# How grpcurl prints a message with a oneof (docs/api.md shows it).
DESCRIBE_DISCONNECT_REQUEST = """\
fanout.v1.DisconnectRequest is a message:
message DisconnectRequest {
  oneof target {
    string connection_id = 1;
    string user = 2;
  }
  uint32 code = 3;
  string reason = 4;
}"""
REQUIRED_SERVICES = {"fanout.v1.Fanout", "grpc.health.v1.Health",
                     "grpc.reflection.v1.ServerReflection",
                     "grpc.reflection.v1alpha.ServerReflection"}


# --- the README ---------------------------------------------------------------

def readme_outputs():
    """What the README's console blocks show each `grpcurl -plaintext ADDR ...` print.

    Keyed by what follows the address, e.g. "describe fanout.v1.Fanout"; the
    output runs to the next blank line or `$ ` line.
    """
    outputs = {}
    lines = open(README, encoding="utf-8").read().split("\n")
    in_console = False
    i = 0
    while i < len(lines):
        line = lines[i]
        i += 1
        if line.startswith("```"):
            in_console = line.strip() == "```console"
            continue
        m = re.match(r"\$ grpcurl -plaintext 127\.0\.0\.1:50051 (.+)$", line)
        if not (in_console and m):
            continue
        output = []
        while i < len(lines) and lines[i].strip() and not lines[i].startswith(("$ ", "```")):
            output.append(lines[i])
            i += 1
        outputs[m.group(1).strip()] = "\n".join(output)
    return outputs


def reference_descriptors(tmp):
    """proto/fanout/v1/fanout.proto compiled by protoc: what reflection must describe."""
    out = os.path.join(tmp, "fanout_reference.pb")
    subprocess.run(["protoc", f"-I{PROTO_ROOT}", "--include_imports",
                    f"--descriptor_set_out={out}", os.path.join(PROTO_ROOT, FANOUT_PROTO)],
                   check=True, timeout=TIMEOUT)
    fds = descriptor_pb2.FileDescriptorSet.FromString(open(out, "rb").read())
    return next(f for f in fds.file if f.name == FANOUT_PROTO)


def message_shape(message_proto):
    """A DescriptorProto's fields as comparable tuples (comments and options aside)."""
    return [(f.name, f.number, f.label, f.type, f.type_name,
             f.HasField("oneof_index") and message_proto.oneof_decl[f.oneof_index].name or "")
            for f in sorted(message_proto.field, key=lambda f: f.number)]


# --- reflection ---------------------------------------------------------------

def compile_reflection_proto(tmp):
    """Generates the reflection stubs into `tmp` and imports them.

    The .proto is copied to a flat name: generated code for
    grpc/reflection/v1alpha would live in a `grpc` package that grpcio owns.
    """
    src = os.path.join(GRPC_PROTO_ROOT, REFLECTION_PROTO)
    shutil.copy(src, os.path.join(tmp, "fanout_e2e_reflection.proto"))
    cmd = ["protoc", f"-I{tmp}", f"--python_out={tmp}", f"--grpc_python_out={tmp}",
           f"--plugin=protoc-gen-grpc_python={GRPC_PYTHON_PLUGIN}",
           os.path.join(tmp, "fanout_e2e_reflection.proto")]
    subprocess.run(cmd, check=True, timeout=TIMEOUT)
    sys.path.insert(0, tmp)
    return (importlib.import_module("fanout_e2e_reflection_pb2"),
            importlib.import_module("fanout_e2e_reflection_pb2_grpc"))


class ReflectionClient:
    """What grpcurl does with reflection: services, files, a descriptor pool."""

    def __init__(self, channel, pb2, pb2_grpc):
        self.pb2 = pb2
        self.stub = pb2_grpc.ServerReflectionStub(channel)
        self.pool = descriptor_pool.DescriptorPool()
        self.factory = message_factory.MessageFactory(self.pool)
        self.files = {}  # name -> FileDescriptorProto, as the server sent them

    def _ask(self, **request):
        # Read the stream to its end (the server ends it after our one request)
        # rather than leave it open: an open call holds fanoutd's shutdown.
        responses = list(self.stub.ServerReflectionInfo(
            iter([self.pb2.ServerReflectionRequest(**request)]), timeout=TIMEOUT))
        if len(responses) != 1:
            raise Fatal(f"reflection {request}: {len(responses)} responses, want 1")
        response = responses[0]
        if response.HasField("error_response"):
            raise Fatal(f"reflection {request}: {response.error_response.error_message}")
        return response

    def list_services(self):
        return [s.name for s in self._ask(list_services="").list_services_response.service]

    def load_symbol(self, symbol):
        """Fetches the file defining `symbol` and its dependencies into the pool."""
        response = self._ask(file_containing_symbol=symbol)
        self._add_files(response.file_descriptor_response.file_descriptor_proto)

    def _add_files(self, serialized_files):
        def fetch(dep, _importer):
            return self._ask(file_by_filename=dep).file_descriptor_response.file_descriptor_proto
        e2e_support.add_file_descriptors(self.files, serialized_files,
                                         descriptor_pb2.FileDescriptorProto.FromString, fetch,
                                         self.pool.Add, Fatal)

    def message_class(self, full_name):
        return self.factory.GetPrototype(self.pool.FindMessageTypeByName(full_name))

    def method_proto(self, method):
        """The MethodDescriptorProto the server sent: it has the streaming flags."""
        return e2e_support.method_proto(self.files, method, Fatal)

    def message_proto(self, message):
        """The DescriptorProto the server sent for a top-level message."""
        return next(m for m in self.files[message.file.name].message_type
                    if m.name == message.name)


class DynamicCaller:
    """Unary calls with JSON in and JSON out, typed only by reflection."""

    def __init__(self, channel, reflection):
        self.channel = channel
        self.reflection = reflection

    def call(self, method_path, request_json):
        service_name, method_name = method_path.split("/")
        service = self.reflection.pool.FindServiceByName(service_name)
        method = service.methods_by_name[method_name]
        request_class = self.reflection.message_class(method.input_type.full_name)
        response_class = self.reflection.message_class(method.output_type.full_name)
        request = json_format.Parse(request_json, request_class())
        rpc = self.channel.unary_unary(f"/{service_name}/{method_name}",
                                       request_serializer=request_class.SerializeToString,
                                       response_deserializer=response_class.FromString)
        response = rpc(request, timeout=TIMEOUT)
        # grpcurl's rendering: proto3 JSON, lowerCamelCase names, two-space indent.
        return json_format.MessageToJson(response, indent=2)


# grpcurl prints descriptors with protoreflect's protoprint (compact, elements
# sorted, fully qualified type names); for services and flat messages like these
# that comes down to the two functions below.
def describe_service(service, reflection):
    """grpcurl-style text of a service: methods sorted, fully qualified types,
    `stream` before a streamed side."""
    lines = [f"{service.full_name} is a service:", f"service {service.name} {{"]
    for m in sorted(service.methods, key=lambda m: m.name):
        proto = reflection.method_proto(m)
        request = ("stream " if proto.client_streaming else "") + "." + m.input_type.full_name
        response = ("stream " if proto.server_streaming else "") + "." + m.output_type.full_name
        lines.append(f"  rpc {m.name} ( {request} ) returns ( {response} );")
    lines.append("}")
    return "\n".join(lines)


SCALAR_TYPE_NAMES = {getattr(descriptor_pb2.FieldDescriptorProto, n): n[5:].lower()
                     for n in descriptor_pb2.FieldDescriptorProto.Type.keys()}


def describe_message(message):
    """grpcurl-style text of a message: fields by number, a oneof at its
    smallest field number, fully qualified types."""
    def field_line(f):
        if f.message_type is not None:
            type_name = f".{f.message_type.full_name}"
        elif f.enum_type is not None:
            type_name = f".{f.enum_type.full_name}"
        else:
            type_name = SCALAR_TYPE_NAMES[f.type]
        label = "repeated " if f.label == f.LABEL_REPEATED else ""
        return f"{label}{type_name} {f.name} = {f.number};"

    items = [(f.number, [f"  {field_line(f)}"])
             for f in message.fields if f.containing_oneof is None]
    for oneof in message.oneofs:
        body = [f"  oneof {oneof.name} {{"]
        body += [f"    {field_line(f)}" for f in sorted(oneof.fields, key=lambda f: f.number)]
        items.append((min(f.number for f in oneof.fields), body + ["  }"]))
    lines = [f"{message.full_name} is a message:", f"message {message.name} {{"]
    for _, body in sorted(items, key=lambda item: item[0]):
        lines += body
    lines.append("}")
    return "\n".join(lines)


def unresolved_fields(message, seen):
    """Names of fields of `message` (recursively) whose type did not resolve."""
    if message.full_name in seen:
        return []
    seen.add(message.full_name)
    missing = []
    for field in message.fields:
        if field.type == field.TYPE_MESSAGE:
            if field.message_type is None:
                missing.append(f"{message.full_name}.{field.name}")
            else:
                missing += unresolved_fields(field.message_type, seen)
    return missing


# --- the session --------------------------------------------------------------

async def session(binary, tmp, results):
    pb2, pb2_grpc = compile_reflection_proto(tmp)
    server = Fanoutd(binary, "e2e-reflection")
    try:
        await run_session(server, pb2, pb2_grpc, results, tmp)
    finally:
        server.kill()
        if results.failed:
            print("--- fanoutd stderr ---\n" + server.stderr_text(), flush=True)


async def run_session(server, pb2, pb2_grpc, results, tmp):
    addresses = server.ready_line()
    results.check("ready line names both ports",
                  set(addresses) == {"grpc", "ws"}, f"got {addresses!r}")
    grpc_address, ws_address = addresses["grpc"], addresses["ws"]
    channel = grpc.insecure_channel(grpc_address)
    grpc.channel_ready_future(channel).result(timeout=TIMEOUT)

    readme = readme_outputs()
    for command in ("list", "describe fanout.v1.Fanout", "describe fanout.v1.PublishRequest"):
        results.check(f"README shows `grpcurl ... {command}` and its output",
                      bool(readme.get(command)), f"found: {sorted(readme)}")

    # grpcurl list
    reflection = ReflectionClient(channel, pb2, pb2_grpc)
    services = reflection.list_services()
    results.expect_eq("list: the services the README shows", sorted(services),
                      readme.get("list", "").split("\n"))
    results.expect_eq("list: the services fanoutd must serve", sorted(services),
                      sorted(REQUIRED_SERVICES))

    # grpcurl describe: every listed service resolves, Fanout completely. The
    # health service resolves only if fanoutd carries grpc/health/v1/health.proto's
    # descriptor (proto/CMakeLists.txt compiles it in for this reason); gRPC's
    # built-in health service registers none of its own.
    for name in sorted(services):
        try:
            reflection.load_symbol(name)
            reflection.pool.FindServiceByName(name)
            results.check(f"describe {name}", True)
        except (Fatal, KeyError) as e:
            results.check(f"describe {name}", False, str(e))
    fanout = reflection.pool.FindServiceByName("fanout.v1.Fanout")
    results.expect_eq("describe fanout.v1.Fanout prints what the README shows",
                      describe_service(fanout, reflection),
                      readme.get("describe fanout.v1.Fanout"))
    methods = {}
    for m in fanout.methods:
        proto = reflection.method_proto(m)
        methods[m.name] = (m.input_type.full_name, m.output_type.full_name,
                           proto.client_streaming, proto.server_streaming)
    results.expect_eq("describe fanout.v1.Fanout: the rpcs, their types and streaming sides",
                      methods, FANOUT_METHODS)
    for name, want in sorted(FANOUT_METHODS.items()):
        results.expect_eq(f"describe fanout.v1.Fanout.{name}", methods.get(name), want)
    missing = []
    for method in fanout.methods:
        for message in (method.input_type, method.output_type):
            # describe MESSAGE asks reflection for the symbol by itself.
            reflection.load_symbol(message.full_name)
            missing += unresolved_fields(message, set())
            reflection.message_class(message.full_name)
    results.check("every message of fanout.v1.Fanout resolves, fields included",
                  not missing, f"unresolved: {missing}")
    results.expect_eq("describe fanout.v1.PublishRequest prints what the README shows",
                      describe_message(
                          reflection.pool.FindMessageTypeByName("fanout.v1.PublishRequest")),
                      readme.get("describe fanout.v1.PublishRequest"))
    results.expect_eq("describe fanout.v1.DisconnectRequest: the oneof target",
                      describe_message(
                          reflection.pool.FindMessageTypeByName("fanout.v1.DisconnectRequest")),
                      DESCRIBE_DISCONNECT_REQUEST)

    # Every message of the .proto, as `describe MESSAGE` asks for it: by its own
    # symbol, with the same fields, numbers, types, labels and oneofs.
    reference = reference_descriptors(tmp)
    reference_names = sorted(f"{reference.package}.{m.name}" for m in reference.message_type)
    missing_messages = sorted(set(FANOUT_MESSAGES) - set(reference_names))
    results.check("the messages this test expects are all in fanout.proto", not missing_messages,
                  f"not in the .proto: {missing_messages}")
    for message_proto in reference.message_type:
        name = f"{reference.package}.{message_proto.name}"
        try:
            reflection.load_symbol(name)
            described = reflection.pool.FindMessageTypeByName(name)
            got = message_shape(reflection.message_proto(described))
        except (Fatal, KeyError, StopIteration) as e:
            results.check(f"describe {name}", False, f"{type(e).__name__}: {e}")
            continue
        results.expect_eq(f"describe {name}: fields as in fanout.proto", got,
                          message_shape(message_proto))
    reference_service = next(s for s in reference.service if s.name == "Fanout")
    results.expect_eq("every rpc of fanout.proto is described, streaming sides included",
                      sorted((m.name, m.client_streaming, m.server_streaming)
                             for m in reference_service.method),
                      sorted((name, v[2], v[3]) for name, v in methods.items()))
    subscriber = reflection.pool.FindMessageTypeByName("fanout.v1.Subscriber")
    results.expect_eq("Subscriber.connected_at is a google.protobuf.Timestamp",
                      subscriber.fields_by_name["connected_at"].message_type.full_name,
                      "google.protobuf.Timestamp")

    caller = DynamicCaller(channel, reflection)

    # grpcurl ... grpc.health.v1.Health/Check
    serving = '{\n  "status": "SERVING"\n}'
    for name, request in (("health check of the server", "{}"),
                          ("health check of fanout.v1.Fanout", '{"service":"fanout.v1.Fanout"}')):
        try:
            results.expect_eq(name, caller.call("grpc.health.v1.Health/Check", request), serving)
        except (KeyError, grpc.RpcError) as e:  # KeyError: reflection did not describe Health
            results.check(name, False, f"{type(e).__name__}: {e}")

    # A browser (here: websockets) listens on "news" while grpcurl publishes.
    ws = await asyncio.wait_for(
        websockets.connect(f"ws://{ws_address}/ws?topics=news"), TIMEOUT)
    await publish_and_query(caller, ws, results)

    # SIGTERM: the subscriber sees 1001, the process exits 0. The gRPC channel
    # is closed first, as the README's grpcurl commands have all exited by then:
    # an idle Python channel does not act on the server's GOAWAY, and the
    # server would wait seconds for that connection to go.
    channel.close()
    server.proc.send_signal(signal.SIGTERM)
    try:
        await asyncio.wait_for(ws.wait_closed(), TIMEOUT)
        results.expect_eq("subscriber closed with 1001 on SIGTERM", ws.close_code, 1001)
    except asyncio.TimeoutError:
        results.check("subscriber closed with 1001 on SIGTERM", False,
                      f"still open after {TIMEOUT}s")
    try:
        code = await asyncio.to_thread(server.proc.wait, TIMEOUT)
        results.expect_eq("fanoutd exits 0 on SIGTERM", code, 0)
    except subprocess.TimeoutExpired:
        results.check("fanoutd exits 0 on SIGTERM", False, f"still running after {TIMEOUT}s")


async def receive(ws):
    return await asyncio.wait_for(ws.recv(), TIMEOUT)


async def publish_and_query(caller, ws, results):
    local_host, local_port = ws.local_address[:2]

    # JSON payload: the subscriber gets it as "data".
    payload = base64.b64encode(b'{"msg":"hello"}').decode()
    results.expect_eq("README base64 of {\"msg\":\"hello\"}", payload, "eyJtc2ciOiJoZWxsbyJ9")
    response = caller.call("fanout.v1.Fanout/Publish",
                           json.dumps({"topic": "news", "payload": payload}))
    results.expect_eq("Publish JSON payload: response",
                      response, '{\n  "seq": "1",\n  "subscribers": "1"\n}')
    results.expect_eq("Publish JSON payload: subscriber frame",
                      await receive(ws), '{"topic":"news","seq":1,"data":{"msg":"hello"}}')

    # Text payload: the subscriber gets it as "text".
    response = caller.call("fanout.v1.Fanout/Publish",
                           '{"topic":"news","payload":"aGVsbG8="}')
    results.expect_eq("Publish text payload: response",
                      response, '{\n  "seq": "2",\n  "subscribers": "1"\n}')
    results.expect_eq("Publish text payload: subscriber frame",
                      await receive(ws), '{"topic":"news","seq":2,"text":"hello"}')

    # The README's GetStats, taken at this point of its session.
    stats = json.loads(caller.call("fanout.v1.Fanout/GetStats", "{}"))
    stats.pop("uptimeSeconds", None)
    results.expect_eq("GetStats after the README's two publishes", stats, {
        "nodeId": "e2e-reflection", "connections": "1", "topics": "1", "subscriptions": "1",
        "messagesIn": "2", "bytesIn": "20", "messagesOut": "2", "bytesOut": "90"})

    # Binary payload: the subscriber gets it back as "b64".
    response = caller.call("fanout.v1.Fanout/Publish", '{"topic":"news","payload":"3q2+7w=="}')
    results.expect_eq("Publish binary payload: response",
                      response, '{\n  "seq": "3",\n  "subscribers": "1"\n}')
    results.expect_eq("Publish binary payload: subscriber frame",
                      await receive(ws), '{"topic":"news","seq":3,"b64":"3q2+7w=="}')

    # No subscriber: grpcurl prints an empty object (seq and subscribers are 0).
    results.expect_eq("Publish to a topic nobody follows",
                      caller.call("fanout.v1.Fanout/Publish",
                                  '{"topic":"sports","payload":"aGVsbG8="}'), "{}")

    # A bad topic is INVALID_ARGUMENT, and the node keeps serving.
    try:
        caller.call("fanout.v1.Fanout/Publish", '{"topic":"no spaces","payload":""}')
        results.check("Publish with a bad topic fails", False, "it succeeded")
    except grpc.RpcError as e:
        results.expect_eq("Publish with a bad topic: status", e.code(),
                          grpc.StatusCode.INVALID_ARGUMENT)
        results.expect_eq("Publish with a bad topic: message", e.details(),
                          "topic has a character outside [A-Za-z0-9_.:@/-] at byte 2")

    # Broadcast reaches every connection, whatever its topics.
    response = caller.call("fanout.v1.Fanout/Broadcast", '{"payload":"eyJtYWludGVuYW5jZSI6dHJ1ZX0="}')
    results.expect_eq("Broadcast: response",
                      response, '{\n  "seq": "1",\n  "connections": "1"\n}')
    results.expect_eq("Broadcast: subscriber frame",
                      await receive(ws), '{"broadcast":true,"seq":1,"data":{"maintenance":true}}')

    stats = json.loads(caller.call("fanout.v1.Fanout/GetStats", "{}"))
    stats.pop("uptimeSeconds", None)  # 0 (omitted) or a few seconds
    results.expect_eq("GetStats at the end", stats, {
        "nodeId": "e2e-reflection", "connections": "1", "topics": "1", "subscriptions": "1",
        "messagesIn": "5", "bytesIn": str(15 + 5 + 4 + 5 + 20),  # the bad topic is not counted
        "messagesOut": "4",
        "bytesOut": str(sum(2 + len(f) for f in (
            '{"topic":"news","seq":1,"data":{"msg":"hello"}}',
            '{"topic":"news","seq":2,"text":"hello"}',
            '{"topic":"news","seq":3,"b64":"3q2+7w=="}',
            '{"broadcast":true,"seq":1,"data":{"maintenance":true}}'))),
    })

    results.expect_eq("ListTopics", caller.call("fanout.v1.Fanout/ListTopics", "{}"),
                      '{\n  "topics": [\n    {\n      "topic": "news",\n'
                      '      "subscribers": "1"\n    }\n  ]\n}')

    listed = json.loads(caller.call("fanout.v1.Fanout/ListSubscribers", '{"topic":"news"}'))
    subs = listed.get("subscribers", [])
    results.expect_eq("ListSubscribers: one subscriber, no next page",
                      (len(subs), "nextPageToken" in listed), (1, False))
    if subs:
        results.expect_eq("ListSubscribers: the subscriber's id and address",
                          (subs[0].get("connectionId"), subs[0].get("remoteAddress")),
                          ("1", f"{local_host}:{local_port}"))
        results.check("ListSubscribers: connectedAt is an RFC 3339 time",
                      subs[0].get("connectedAt", "").endswith("Z"), f"got {subs[0]!r}")


def main():
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    binary = os.path.abspath(sys.argv[1])
    results = Results()
    with tempfile.TemporaryDirectory(prefix="fanout-e2e-") as tmp:
        try:
            asyncio.run(session(binary, tmp, results))
        except Exception as e:  # a Fatal, a gRPC error, a timeout: report and fail
            results.check("session ran to the end", False, f"{type(e).__name__}: {e}")
    return results.summary()


if __name__ == "__main__":
    sys.exit(main())
