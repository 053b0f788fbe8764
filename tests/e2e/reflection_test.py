#!/usr/bin/python3
"""e2e.reflection: the README's grpcurl session, as written, and what server
reflection describes.

1. The session. The README's `console` blocks are run in order against a fresh
   fanoutd, each command with bash as a reader would type it: `grpcurl` is
   grpcurl_standin.py, which knows only what server reflection tells it and
   prints what grpcurl 1.8.0 prints; `websocat URL` opens a real WebSocket
   subscriber; the `json` blocks are the frames that subscriber must receive
   next. What each command prints (and its exit status) must be what the
   README shows, byte for byte but for the volatile values e2e_support masks
   (addresses, ids, times). Then SIGTERM: the subscriber sees 1001, fanoutd
   exits 0, as the README says.
2. Reflection describes the whole API: every service the node lists resolves,
   every rpc of fanout.v1.Fanout with its types and streaming sides, every
   message of proto/fanout/v1/fanout.proto field for field (the .proto,
   compiled with protoc, is only the reference to compare with, never used to
   talk to the server).

Usage: /usr/bin/python3 reflection_test.py path/to/fanoutd
(Debian's grpcio, protobuf and websockets load only in /usr/bin/python3.)
"""

import asyncio
import importlib
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile

import grpc
import websockets
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import e2e_support  # noqa: E402
from e2e_support import (DOC_GRPC_ADDRESS, DOC_WS_ADDRESS, TIMEOUT, Fanoutd, Fatal,  # noqa: E402
                         Results, diff, expected_status, make_bin_dir, normalize,
                         output_matches, parse_console_block, run_command)

GRPC_PROTO_ROOT = "/usr/share/grpc-proto"
REFLECTION_PROTO = "grpc/reflection/v1alpha/reflection.proto"
GRPC_PYTHON_PLUGIN = "/usr/bin/grpc_python_plugin"

HERE = os.path.dirname(os.path.abspath(__file__))
README = os.path.normpath(os.path.join(HERE, "..", "..", "README.md"))
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
    "History": ("fanout.v1.HistoryRequest", "fanout.v1.HistoryResponse", False, False),
    "Presence": ("fanout.v1.PresenceRequest", "fanout.v1.PresenceResponse", False, False),
}
# The rpcs' messages, and the messages they contain.
FANOUT_MESSAGES = sorted({t for m in FANOUT_METHODS.values() for t in m[:2]} | {
    "fanout.v1.Subscriber", "fanout.v1.TopicInfo", "fanout.v1.PresenceUser"})
REQUIRED_SERVICES = {"fanout.v1.Fanout", "grpc.health.v1.Health",
                     "grpc.reflection.v1.ServerReflection",
                     "grpc.reflection.v1alpha.ServerReflection"}
# What the README's session must at least show (the command after the address).
README_MUST_SHOW = ["list", "describe fanout.v1.Fanout", "grpc.health.v1.Health/Check",
                    "fanout.v1.Fanout/Publish", "fanout.v1.Fanout/GetStats",
                    "fanout.v1.Fanout/ListTopics", "fanout.v1.Fanout/ListSubscribers"]
EMPTY_RESPONSE = "{\n  \n}"  # grpcurl's empty message (grpcurl_standin.py says why)


# --- the README's session --------------------------------------------------------

def readme_session(text):
    """The session in page order: ("command", Example) for each `$ ` line of a
    console block, ("frame", LINE, TEXT) for each line of a json block."""
    items = []
    lines = text.split("\n")
    i = 0
    while i < len(lines):
        if lines[i].startswith("```"):
            info = lines[i][3:].strip()
            start = i + 1
            i += 1
            while i < len(lines) and not lines[i].startswith("```"):
                i += 1
            body = lines[start:i]
            if info == "console":
                items += [("command", e) for e in parse_console_block(body, start + 1)]
            elif info == "json":
                items += [("frame", start + 1 + k, line) for k, line in enumerate(body)
                          if line.strip()]
        i += 1
    return items


def grpcurl_target(command):
    """What follows the address in `grpcurl -plaintext [-d ...] ADDR ...`, or None."""
    try:
        words = shlex.split(command)
    except ValueError:
        return None
    if "grpcurl" not in words or DOC_GRPC_ADDRESS not in words:
        return None
    return " ".join(words[words.index(DOC_GRPC_ADDRESS) + 1:])


async def replay_readme(addresses, tmp, results):
    """Runs the README's session; returns the subscriber it opened (or None)."""
    session = readme_session(open(README, encoding="utf-8").read())
    examples = [item[1] for item in session if item[0] == "command"]
    shown = {grpcurl_target(e.command) for e in examples}
    for target in README_MUST_SHOW:
        results.check(f"README's session shows grpcurl ... {target}", target in shown,
                      f"it shows {sorted(t for t in shown if t)}")
    results.check("README's session shows a Publish that nobody receives (an empty response)",
                  any(grpcurl_target(e.command) == "fanout.v1.Fanout/Publish"
                      and e.expected == EMPTY_RESPONSE for e in examples))
    bin_dir = make_bin_dir(tmp)
    subscriber = None
    for item in session:
        if item[0] == "frame":
            _, line, want = item
            name = f"README.md:{line}: the subscriber receives {want}"
            if subscriber is None:
                results.check(name, False, "no subscriber has connected by this point")
                continue
            try:
                got = await asyncio.wait_for(subscriber.recv(), TIMEOUT)
            except asyncio.TimeoutError:
                got = f"nothing within {TIMEOUT}s"
            results.expect_eq(name, normalize(got), normalize(want))
            continue
        example = item[1]
        name = f"README.md:{example.line}: {example.command.split(chr(10))[0][:90]}"
        words = shlex.split(example.command)
        if words[0] == "websocat":
            # The reader's subscriber; a real WebSocket client stands in for websocat.
            url = words[-1].replace(DOC_WS_ADDRESS, addresses["ws"])
            try:
                subscriber = await asyncio.wait_for(websockets.connect(url), TIMEOUT)
                results.check(f"{name} (connected)", True)
            except (OSError, asyncio.TimeoutError, websockets.WebSocketException) as e:
                results.check(f"{name} (connected)", False, f"{type(e).__name__}: {e}")
            continue
        command = example.command.replace(DOC_GRPC_ADDRESS, addresses["grpc"])
        code, out, err = await run_command(command, tmp, bin_dir)
        if code is None:
            results.check(name, False, err)
            continue
        want_status = expected_status(example.expected)
        results.check(f"{name} (exit status)", code == want_status,
                      f"exit status {code}, want {want_status}; stderr: {err!r}")
        results.check(f"{name} (output)", output_matches(example.expected, out + err),
                      "\n" + diff(example.expected, out + err, "README.md"))
    results.check("README's session connects a subscriber", subscriber is not None)
    return subscriber


# --- server reflection -----------------------------------------------------------

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


# --- the test ----------------------------------------------------------------------

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
    workdir = os.path.join(tmp, "session")
    os.mkdir(workdir)
    subscriber = await replay_readme(addresses, workdir, results)

    channel = grpc.insecure_channel(addresses["grpc"])
    grpc.channel_ready_future(channel).result(timeout=TIMEOUT)
    check_reflection(ReflectionClient(channel, pb2, pb2_grpc), tmp, results)

    # SIGTERM: the subscriber sees 1001, the process exits 0. The gRPC channel
    # is closed first, as the README's grpcurl commands have all exited by then:
    # an idle Python channel does not act on the server's GOAWAY, and the
    # server would wait seconds for that connection to go.
    channel.close()
    server.proc.send_signal(signal.SIGTERM)
    if subscriber is not None:
        try:
            await asyncio.wait_for(subscriber.wait_closed(), TIMEOUT)
            results.expect_eq("subscriber closed with 1001 on SIGTERM", subscriber.close_code,
                              1001)
        except asyncio.TimeoutError:
            results.check("subscriber closed with 1001 on SIGTERM", False,
                          f"still open after {TIMEOUT}s")
    try:
        code = await asyncio.to_thread(server.proc.wait, TIMEOUT)
        results.expect_eq("fanoutd exits 0 on SIGTERM", code, 0)
    except subprocess.TimeoutExpired:
        results.check("fanoutd exits 0 on SIGTERM", False, f"still running after {TIMEOUT}s")


def check_reflection(reflection, tmp, results):
    # grpcurl list / describe: every listed service resolves. The health service
    # resolves only if fanoutd carries grpc/health/v1/health.proto's descriptor
    # (proto/CMakeLists.txt compiles it in for this reason), the reflection
    # services only if it carries theirs.
    services = reflection.list_services()
    results.expect_eq("list: the services fanoutd must serve", sorted(services),
                      sorted(REQUIRED_SERVICES))
    for name in sorted(services):
        try:
            reflection.load_symbol(name)
            reflection.pool.FindServiceByName(name)
            results.check(f"describe {name}", True)
        except (Fatal, KeyError) as e:
            results.check(f"describe {name}", False, str(e))
    fanout = reflection.pool.FindServiceByName("fanout.v1.Fanout")
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
