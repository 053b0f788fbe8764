#!/usr/bin/python3
"""e2e.json_names: the descriptors fanoutd serves carry json_name, and the
grpcurl stand-in prints what they say.

grpcurl 1.8 names each field of its JSON output after the json_name of the
descriptor that server reflection sent, and after the proto name when there is
none; gRPC C++'s own reflection sends none, which is why fanoutd answers
reflection itself (service/reflection_service.cc). This test holds both ends:

1. Over grpc.reflection.v1 and v1alpha alike, every file fanoutd serves (each
   listed service's file and everything it imports) is exactly what protoc
   compiles from the same .proto, and every field in it has its json_name,
   protoc's lowerCamelCase name. The reflection answers gRPC's clients expect
   are there too: dependencies sent along, one answer per request in order,
   gRPC's NOT_FOUND and UNIMPLEMENTED errors.
2. The stand-in follows the descriptors, so the doc tests can fail: formatted
   with the served descriptors a GetStatsResponse reads "nodeId"; with the
   same descriptors stripped of json_name it reads "node_id", and so does the
   stand-in, run as a command, against a reflection server that serves them
   stripped (what fanoutd served with gRPC's reflection plugin).
3. An idle reflection stream does not hold up shutdown: at SIGTERM it ends with
   UNAVAILABLE and fanoutd exits 0 long before its drain timeout.

Usage: /usr/bin/python3 json_names_test.py path/to/fanoutd
(Debian's grpcio and protobuf load only in /usr/bin/python3.)
"""

import asyncio
import os
import queue
import subprocess
import sys
import tempfile
import time
from concurrent import futures

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import grpcurl_standin  # noqa: E402
from e2e_support import TIMEOUT, Fanoutd, Fatal, Results, make_bin_dir, run_command  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
PROTO_ROOT = os.path.normpath(os.path.join(HERE, "..", "..", "proto"))
GRPC_PROTO_ROOT = "/usr/share/grpc-proto"
# Every .proto fanoutd compiles in (proto/CMakeLists.txt), with the root it is under.
SERVED_PROTOS = [(PROTO_ROOT, "fanout/v1/fanout.proto"),
                 (GRPC_PROTO_ROOT, "grpc/health/v1/health.proto"),
                 (GRPC_PROTO_ROOT, "grpc/reflection/v1/reflection.proto"),
                 (GRPC_PROTO_ROOT, "grpc/reflection/v1alpha/reflection.proto")]
VERSIONS = ("v1", "v1alpha")
SERVICES = ["fanout.v1.Fanout", "grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection",
            "grpc.reflection.v1alpha.ServerReflection"]
DRAIN_TIMEOUT = 60  # seconds: far longer than this test may wait for an exit
NOT_FOUND = grpc.StatusCode.NOT_FOUND.value[0]
UNIMPLEMENTED = grpc.StatusCode.UNIMPLEMENTED.value[0]


def compile_protos(tmp):
    """name -> FileDescriptorProto, as protoc compiles the served files (and their imports)."""
    out = os.path.join(tmp, "served_reference.pb")
    roots = sorted({root for root, _ in SERVED_PROTOS})
    subprocess.run(["protoc", *[f"-I{r}" for r in roots], "--include_imports",
                    f"--descriptor_set_out={out}", *[rel for _, rel in SERVED_PROTOS]],
                   check=True, timeout=TIMEOUT)
    fds = descriptor_pb2.FileDescriptorSet.FromString(open(out, "rb").read())
    return {f.name: f for f in fds.file}


def message_classes(files):
    pool = descriptor_pool.DescriptorPool()
    for name in sorted(files, key=lambda n: dependency_depth(files, n)):
        pool.Add(files[name])
    factory = message_factory.MessageFactory(pool)
    return pool, lambda full_name: grpcurl_standin.message_class(
        factory, pool.FindMessageTypeByName(full_name))


def dependency_depth(files, name):
    deps = files[name].dependency
    return 1 + max((dependency_depth(files, d) for d in deps), default=0)


def json_name(name):
    """protoc's json_name of a field (descriptor.cc, ToJsonName)."""
    return grpcurl_standin.default_json_name(name)


def fields_of(fdp):
    """(full field name, FieldDescriptorProto) of every field and extension in a file."""
    def walk(scope, message):
        full = f"{scope}.{message.name}"
        for f in list(message.field) + list(message.extension):
            yield f"{full}.{f.name}", f
        for nested in message.nested_type:
            yield from walk(full, nested)
    for message in fdp.message_type:
        yield from walk(fdp.package, message)
    for f in fdp.extension:
        yield f"{fdp.package}.{f.name}", f


def strip_json_names(fdp):
    stripped = descriptor_pb2.FileDescriptorProto()
    stripped.CopyFrom(fdp)
    for _, f in fields_of(stripped):
        f.ClearField("json_name")
    return stripped


class ReflectionStream:
    """One ServerReflectionInfo stream of either version, one answer per request."""

    def __init__(self, channel, classes, version):
        self.request = classes(f"grpc.reflection.{version}.ServerReflectionRequest")
        response = classes(f"grpc.reflection.{version}.ServerReflectionResponse")
        self.rpc = channel.stream_stream(
            f"/grpc.reflection.{version}.ServerReflection/ServerReflectionInfo",
            request_serializer=self.request.SerializeToString,
            response_deserializer=response.FromString)

    def ask(self, *requests):
        """The answers to `requests`, sent on one stream that then ends."""
        return list(self.rpc(iter([self.request(**r) for r in requests]), timeout=TIMEOUT))


def check_version(version, channel, classes, reference, results):
    """Checks fanoutd's answers over one version; returns the files it served."""
    stream = ReflectionStream(channel, classes, version)
    (listed,) = stream.ask({"list_services": ""})
    results.expect_eq(f"{version}: list_services", [s.name for s in
                                                    listed.list_services_response.service],
                      SERVICES)
    served = {}
    for service in SERVICES:
        (answer,) = stream.ask({"file_containing_symbol": service})
        files = [descriptor_pb2.FileDescriptorProto.FromString(raw)
                 for raw in answer.file_descriptor_response.file_descriptor_proto]
        names = [f.name for f in files]
        imports = {d for f in files for d in f.dependency}
        results.check(f"{version}: file_containing_symbol {service} sends its file and "
                      f"everything it imports", bool(files) and imports <= set(names),
                      f"sent {names}, imports {sorted(imports)}")
        for f in files:
            served[f.name] = f
    results.expect_eq(f"{version}: the files served", sorted(served), sorted(reference))
    for name in sorted(served):
        results.check(f"{version}: {name} is what protoc compiles, json_name included",
                      served[name] == reference.get(name))
        missing = [full for full, f in fields_of(served[name])
                   if not f.HasField("json_name") or f.json_name != json_name(f.name)]
        results.check(f"{version}: every field of {name} has its json_name", not missing,
                      f"without: {missing}")

    # What gRPC's clients rely on beyond that: one answer per request, in order,
    # each naming its request; gRPC's error codes and messages.
    requests = [{"file_by_filename": "fanout/v1/fanout.proto", "host": "h1"},
                {"file_by_filename": "no/such.proto"},
                {"file_containing_symbol": "fanout.v1.NoSuchMessage"},
                {"file_containing_extension": {"containing_type": "fanout.v1.NoSuchMessage",
                                               "extension_number": 100}},
                {"file_containing_extension": {"containing_type": "fanout.v1.PublishRequest",
                                               "extension_number": 100}},
                {"all_extension_numbers_of_type": "fanout.v1.PublishRequest"},
                {"all_extension_numbers_of_type": "fanout.v1.NoSuchMessage"},
                {}]
    answers = stream.ask(*requests)
    results.expect_eq(f"{version}: one answer per request", len(answers), len(requests))
    if len(answers) != len(requests):
        return served
    results.expect_eq(f"{version}: each answer carries its request and host",
                      [(a.original_request == stream.request(**r), a.valid_host)
                       for a, r in zip(answers, requests)],
                      [(True, r.get("host", "")) for r in requests])
    first = [descriptor_pb2.FileDescriptorProto.FromString(raw).name
             for raw in answers[0].file_descriptor_response.file_descriptor_proto]
    results.expect_eq(f"{version}: file_by_filename sends the file, then its imports", first,
                      ["fanout/v1/fanout.proto", "google/protobuf/timestamp.proto"])
    errors = [(a.error_response.error_code, a.error_response.error_message) for a in answers[1:]]
    results.expect_eq(f"{version}: gRPC's errors", errors, [
        (NOT_FOUND, "File not found."), (NOT_FOUND, "Symbol not found."),
        (NOT_FOUND, "Type not found."), (NOT_FOUND, "Extension not found."), (0, ""),
        (NOT_FOUND, "Type not found."), (UNIMPLEMENTED, "The provided request is not supported.")])
    extensions = answers[5].all_extension_numbers_response
    results.expect_eq(f"{version}: all_extension_numbers_of_type",
                      (extensions.base_type_name, list(extensions.extension_number)),
                      ("fanout.v1.PublishRequest", []))
    return served


# --- the stand-in follows the descriptors -----------------------------------------

def stats_response(classes):
    return classes("fanout.v1.GetStatsResponse")(node_id="n1", uptime_seconds=3, messages_in=2)


STATS_CAMEL = '{\n  "nodeId": "n1",\n  "uptimeSeconds": "3",\n  "messagesIn": "2"\n}\n'
STATS_SNAKE = '{\n  "node_id": "n1",\n  "uptime_seconds": "3",\n  "messages_in": "2"\n}\n'


def check_formatting(served, results):
    _, classes = message_classes(served)
    results.expect_eq("stand-in: GetStatsResponse with the served descriptors",
                      grpcurl_standin.format_response(stats_response(classes),
                                                      grpcurl_standin.JsonNames(served)),
                      STATS_CAMEL)
    stripped = {name: strip_json_names(f) for name, f in served.items()}
    results.expect_eq("stand-in: GetStatsResponse with descriptors without json_name",
                      grpcurl_standin.format_response(stats_response(classes),
                                                      grpcurl_standin.JsonNames(stripped)),
                      STATS_SNAKE)
    empty = classes("fanout.v1.PublishResponse")()
    results.expect_eq("stand-in: an empty response",
                      grpcurl_standin.format_response(empty, grpcurl_standin.JsonNames(served)),
                      "{\n  \n}\n")


class StrippedServer:
    """A gRPC server answering grpc.reflection.v1alpha with `files` stripped of
    json_name, as gRPC C++'s reflection answers, and GetStats with a fixed
    response."""

    def __init__(self, files):
        self.stripped = {name: strip_json_names(f) for name, f in files.items()}
        self.pool, classes = message_classes(self.stripped)
        self.request = classes("grpc.reflection.v1alpha.ServerReflectionRequest")
        self.response = classes("grpc.reflection.v1alpha.ServerReflectionResponse")
        stats = stats_response(classes)
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        self.server.add_generic_rpc_handlers([
            grpc.method_handlers_generic_handler("grpc.reflection.v1alpha.ServerReflection", {
                "ServerReflectionInfo": grpc.stream_stream_rpc_method_handler(
                    self._reflect, request_deserializer=self.request.FromString,
                    response_serializer=self.response.SerializeToString)}),
            grpc.method_handlers_generic_handler("fanout.v1.Fanout", {
                "GetStats": grpc.unary_unary_rpc_method_handler(
                    lambda request, context: stats,
                    request_deserializer=classes("fanout.v1.GetStatsRequest").FromString,
                    response_serializer=type(stats).SerializeToString)})])
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()

    def _file_and_imports(self, name, seen):
        if name in seen:
            return []
        seen.add(name)
        fdp = self.stripped[name]
        out = [fdp.SerializeToString()]
        for dep in fdp.dependency:
            out += self._file_and_imports(dep, seen)
        return out

    def _reflect(self, requests, context):
        for request in requests:
            response = self.response(original_request=request)
            kind = request.WhichOneof("message_request")
            try:
                if kind == "list_services":
                    for name in SERVICES:
                        response.list_services_response.service.add(name=name)
                    yield response
                    continue
                if kind == "file_containing_symbol":
                    name = self.pool.FindFileContainingSymbol(request.file_containing_symbol).name
                elif kind == "file_by_filename":
                    name = self.pool.FindFileByName(request.file_by_filename).name
                else:
                    raise KeyError(kind)
                response.file_descriptor_response.file_descriptor_proto.extend(
                    self._file_and_imports(name, set()))
            except KeyError:
                response.error_response.error_code = NOT_FOUND
                response.error_response.error_message = "not found"
            yield response

    def stop(self):
        self.server.stop(None)


async def check_standin_against_stripped_server(served, tmp, results):
    server = StrippedServer(served)
    try:
        code, out, err = await run_command(
            f"grpcurl -plaintext 127.0.0.1:{server.port} fanout.v1.Fanout/GetStats", tmp,
            make_bin_dir(tmp))
    finally:
        server.stop()
    results.expect_eq("stand-in against a server whose descriptors lack json_name: what "
                      "grpcurl 1.8 prints then", (code, out, err), (0, STATS_SNAKE, ""))


# --- shutdown ---------------------------------------------------------------------

def check_shutdown(binary, classes, results):
    server = Fanoutd(binary, "e2e-json-names-shutdown",
                     extra_args=[f"--drain_timeout={DRAIN_TIMEOUT}s"])
    try:
        channel = grpc.insecure_channel(server.ready_line()["grpc"])
        calls = []
        for version in VERSIONS:
            stream = ReflectionStream(channel, classes, version)
            pending = queue.Queue()
            call = stream.rpc(iter(pending.get, None), timeout=2 * TIMEOUT)
            pending.put(stream.request(list_services=""))
            next(call)  # answered: the stream is open and idle
            calls.append((version, call, pending))
        started = time.monotonic()
        server.proc.terminate()
        for version, call, pending in calls:
            try:
                extra = list(call)
                results.check(f"{version}: an idle reflection stream ends at shutdown", False,
                              f"it ended OK after {len(extra)} more answers")
            except grpc.RpcError as e:
                results.expect_eq(f"{version}: an idle reflection stream ends at shutdown",
                                  (e.code(), e.details()),
                                  (grpc.StatusCode.UNAVAILABLE, "node is shutting down"))
            pending.put(None)
        # The idle channel itself would hold the drain (grpcio does not act on
        # GOAWAY): close it, as a client that has its answers would exit.
        channel.close()
        try:
            code = server.proc.wait(TIMEOUT)
            results.expect_eq(f"fanoutd exits 0 well within its {DRAIN_TIMEOUT}s drain",
                              (code, time.monotonic() - started < TIMEOUT), (0, True))
        except subprocess.TimeoutExpired:
            results.check(f"fanoutd exits 0 well within its {DRAIN_TIMEOUT}s drain", False,
                          f"still running after {TIMEOUT}s")
    finally:
        server.kill()
        if results.failed:
            print("--- fanoutd stderr ---\n" + server.stderr_text(), flush=True)


def run(binary, tmp, results):
    reference = compile_protos(tmp)
    _, classes = message_classes(reference)
    server = Fanoutd(binary, "e2e-json-names")
    try:
        channel = grpc.insecure_channel(server.ready_line()["grpc"])
        grpc.channel_ready_future(channel).result(timeout=TIMEOUT)
        by_version = {v: check_version(v, channel, classes, reference, results) for v in VERSIONS}
        results.check("v1 and v1alpha serve the same files",
                      by_version["v1"] == by_version["v1alpha"])
        channel.close()
    finally:
        server.stop()
        if results.failed:
            print("--- fanoutd stderr ---\n" + server.stderr_text(), flush=True)
    served = by_version["v1alpha"]  # what grpcurl 1.8.0 reads
    check_formatting(served, results)
    asyncio.run(check_standin_against_stripped_server(served, tmp, results))
    check_shutdown(binary, classes, results)


def main():
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    binary = os.path.abspath(sys.argv[1])
    results = Results()
    with tempfile.TemporaryDirectory(prefix="fanout-json-names-") as tmp:
        try:
            run(binary, tmp, results)
        except (Fatal, grpc.RpcError, grpc.FutureTimeoutError, ValueError, KeyError) as e:
            results.check("test ran to the end", False, f"{type(e).__name__}: {e}")
    return results.summary()


if __name__ == "__main__":
    sys.exit(main())
