#!/usr/bin/python3
"""e2e.reflection: the README's grpcurl session, driven through server reflection.

grpcurl knows nothing about fanout but what server reflection tells it. This
test holds itself to the same rule: it compiles only grpc.reflection.v1alpha
(from /usr/share/grpc-proto), asks the server for the descriptors of every
service, builds message classes from the FileDescriptorProtos it gets back, and
then does what the README shows: list, describe, health check, publish (JSON
request with a base64 payload, as grpcurl takes it) while a real WebSocket
subscriber listens, GetStats, ListTopics, ListSubscribers, and a SIGTERM that
closes the subscriber with 1001 and exits 0.

Usage: /usr/bin/python3 reflection_test.py path/to/fanoutd
(Debian's grpcio, protobuf and websockets load only in /usr/bin/python3.)
"""

import asyncio
import base64
import importlib
import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading

import grpc
import websockets
from google.protobuf import descriptor_pb2, descriptor_pool, json_format, message_factory

GRPC_PROTO_ROOT = "/usr/share/grpc-proto"
REFLECTION_PROTO = "grpc/reflection/v1alpha/reflection.proto"
GRPC_PYTHON_PLUGIN = "/usr/bin/grpc_python_plugin"
TIMEOUT = 10.0  # seconds; bounds every single wait in this test

FANOUT_METHODS = {
    "Publish": ("fanout.v1.PublishRequest", "fanout.v1.PublishResponse"),
    "Broadcast": ("fanout.v1.BroadcastRequest", "fanout.v1.BroadcastResponse"),
    "ListSubscribers": ("fanout.v1.ListSubscribersRequest", "fanout.v1.ListSubscribersResponse"),
    "ListTopics": ("fanout.v1.ListTopicsRequest", "fanout.v1.ListTopicsResponse"),
    "GetStats": ("fanout.v1.GetStatsRequest", "fanout.v1.GetStatsResponse"),
}
README_DESCRIBE_FANOUT = """\
fanout.v1.Fanout is a service:
service Fanout {
  rpc Broadcast ( .fanout.v1.BroadcastRequest ) returns ( .fanout.v1.BroadcastResponse );
  rpc GetStats ( .fanout.v1.GetStatsRequest ) returns ( .fanout.v1.GetStatsResponse );
  rpc ListSubscribers ( .fanout.v1.ListSubscribersRequest ) returns ( .fanout.v1.ListSubscribersResponse );
  rpc ListTopics ( .fanout.v1.ListTopicsRequest ) returns ( .fanout.v1.ListTopicsResponse );
  rpc Publish ( .fanout.v1.PublishRequest ) returns ( .fanout.v1.PublishResponse );
}"""
README_DESCRIBE_PUBLISH_REQUEST = """\
fanout.v1.PublishRequest is a message:
message PublishRequest {
  string topic = 1;
  bytes payload = 2;
}"""
REQUIRED_SERVICES = {"fanout.v1.Fanout", "grpc.health.v1.Health",
                     "grpc.reflection.v1alpha.ServerReflection"}


class Results:
    def __init__(self):
        self.passed = 0
        self.failed = 0

    def check(self, name, ok, detail=""):
        if ok:
            self.passed += 1
            print(f"ok   {name}", flush=True)
        else:
            self.failed += 1
            print(f"FAIL {name}" + (f": {detail}" if detail else ""), flush=True)
        return ok

    def expect_eq(self, name, got, want):
        return self.check(name, got == want, f"got {got!r}, want {want!r}")


class Fatal(Exception):
    """A failure after which the rest of the test cannot run."""


# --- the server process -------------------------------------------------------

class Fanoutd:
    """fanoutd on port 0: reads its first stdout line, keeps its stderr."""

    def __init__(self, binary):
        self.proc = subprocess.Popen(
            [binary, "--grpc_listen=127.0.0.1:0", "--ws_listen=127.0.0.1:0",
             "--node_id=e2e-reflection", "--io_threads=2"],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.stderr = []
        self._lines = queue.Queue()
        threading.Thread(target=self._pump, args=(self.proc.stdout, self._lines.put),
                         daemon=True).start()
        threading.Thread(target=self._pump, args=(self.proc.stderr, self.stderr.append),
                         daemon=True).start()

    @staticmethod
    def _pump(stream, sink):
        for line in iter(stream.readline, b""):
            sink(line.decode("utf-8", "replace"))
        sink(None)

    def ready_line(self):
        try:
            line = self._lines.get(timeout=TIMEOUT)
        except queue.Empty:
            raise Fatal(f"no ready line on stdout within {TIMEOUT}s")
        if line is None:
            raise Fatal(f"fanoutd exited before its ready line: {self.stderr_text()}")
        return json.loads(line)

    def stderr_text(self):
        return "".join(s for s in self.stderr if s)

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=TIMEOUT)


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
        responses = self.stub.ServerReflectionInfo(
            iter([self.pb2.ServerReflectionRequest(**request)]), timeout=TIMEOUT)
        response = next(iter(responses))
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
        pending = {}
        for raw in serialized_files:
            fdp = descriptor_pb2.FileDescriptorProto.FromString(raw)
            if fdp.name not in self.files:
                pending[fdp.name] = fdp
        # Dependencies the server did not send: ask by file name, as grpcurl does.
        for fdp in list(pending.values()):
            for dep in fdp.dependency:
                if dep not in self.files and dep not in pending:
                    response = self._ask(file_by_filename=dep)
                    self._add_files(response.file_descriptor_response.file_descriptor_proto)
        # The pool needs a file's dependencies before the file.
        while pending:
            ready = [f for f in pending.values() if all(d in self.files for d in f.dependency)]
            if not ready:
                raise Fatal(f"unresolvable dependencies among {sorted(pending)}")
            for fdp in ready:
                if fdp.name not in self.files:  # a dependency lookup may have added it
                    self.pool.Add(fdp)
                    self.files[fdp.name] = fdp
                del pending[fdp.name]

    def message_class(self, full_name):
        return self.factory.GetPrototype(self.pool.FindMessageTypeByName(full_name))


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
def describe_service(service):
    """grpcurl-style text of a service: methods sorted, fully qualified types."""
    lines = [f"{service.full_name} is a service:", f"service {service.name} {{"]
    for m in sorted(service.methods, key=lambda m: m.name):
        lines.append(f"  rpc {m.name} ( .{m.input_type.full_name} ) "
                     f"returns ( .{m.output_type.full_name} );")
    lines.append("}")
    return "\n".join(lines)


SCALAR_TYPE_NAMES = {getattr(descriptor_pb2.FieldDescriptorProto, n): n[5:].lower()
                     for n in descriptor_pb2.FieldDescriptorProto.Type.keys()}


def describe_message(message):
    """grpcurl-style text of a message: fields by number, fully qualified types."""
    lines = [f"{message.full_name} is a message:", f"message {message.name} {{"]
    for f in sorted(message.fields, key=lambda f: f.number):
        if f.message_type is not None:
            type_name = f".{f.message_type.full_name}"
        elif f.enum_type is not None:
            type_name = f".{f.enum_type.full_name}"
        else:
            type_name = SCALAR_TYPE_NAMES[f.type]
        label = "repeated " if f.label == f.LABEL_REPEATED else ""
        lines.append(f"  {label}{type_name} {f.name} = {f.number};")
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
    server = Fanoutd(binary)
    try:
        await run_session(server, pb2, pb2_grpc, results)
    finally:
        server.kill()
        if results.failed:
            print("--- fanoutd stderr ---\n" + server.stderr_text(), flush=True)


async def run_session(server, pb2, pb2_grpc, results):
    addresses = server.ready_line()
    results.check("ready line names both ports",
                  set(addresses) == {"grpc", "ws"}, f"got {addresses!r}")
    grpc_address, ws_address = addresses["grpc"], addresses["ws"]
    channel = grpc.insecure_channel(grpc_address)
    grpc.channel_ready_future(channel).result(timeout=TIMEOUT)

    # grpcurl list
    reflection = ReflectionClient(channel, pb2, pb2_grpc)
    services = reflection.list_services()
    results.expect_eq("list: the services the README shows", sorted(services),
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
                      describe_service(fanout), README_DESCRIBE_FANOUT)
    methods = {m.name: (m.input_type.full_name, m.output_type.full_name)
               for m in fanout.methods}
    results.expect_eq("describe fanout.v1.Fanout: methods and their types",
                      methods, FANOUT_METHODS)
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
                      README_DESCRIBE_PUBLISH_REQUEST)
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

    # SIGTERM: the subscriber sees 1001, the process exits 0.
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
    channel.close()


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
    print(f"{results.passed} passed, {results.failed} failed", flush=True)
    return 1 if results.failed else 0


if __name__ == "__main__":
    sys.exit(main())
