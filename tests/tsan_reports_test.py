#!/usr/bin/python3
"""Checks tests/tsan_reports.py's judgement on reports shaped like the ones
ThreadSanitizer writes for fanoutd (stacks trimmed to the frames it reads): a
race made by our code fails the run; gRPC's own hand-overs do not."""

import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
JUDGE = os.path.join(HERE, "tsan_reports.py")

SEP = "==================\n"

OUR_WRITE = """  Previous write of size 4 at 0x7b9c000338c0 by thread T16 (mutexes: write M0):
    #0 fanout::v1::PublishResponse::_internal_set_subscribers(int) proto/fanout/v1/fanout.pb.h:6253 (fanoutd+0x11a0a1)
    #1 fanout::v1::PublishResponse::set_subscribers(int) proto/fanout/v1/fanout.pb.h:6257 (fanoutd+0x11a0c2)
    #2 fanout::FanoutServiceImpl::Publish(grpc::CallbackServerContext*, fanout::v1::PublishRequest const*, fanout::v1::PublishResponse*)::{lambda(absl::lts_20220623::StatusOr<fanout::PublishResult>)#1}::operator()(absl::lts_20220623::StatusOr<fanout::PublishResult>) const ../../service/fanout_service.cc:67 (fanoutd+0x11a2f0)
    #3 fanout::NatsBroker::Worker::Run() ../../cluster/nats_broker.cc:196 (fanoutd+0x359670)
"""

SERIALIZE_READ = """  Read of size 4 at 0x7b9c000338c0 by thread T28:
    #0 fanout::v1::PublishResponse::_internal_subscribers() const proto/fanout/v1/fanout.pb.h:6249 (fanoutd+0x465050)
    #1 fanout::v1::PublishResponse::ByteSizeLong() const proto/fanout/v1/fanout.pb.cc:1420 (fanoutd+0x465111)
    #2 grpc::Status grpc::GenericSerialize<grpc::ProtoBufferWriter, fanout::v1::PublishResponse>(google::protobuf::MessageLite const&, grpc::ByteBuffer*, bool*) <null> (fanoutd+0x13e06d)
    #3 grpc::internal::CallOpSendMessage::AddOp(grpc_op*, unsigned long*) <null> (fanoutd+0xa8810)
    #4 grpc::internal::Call::PerformOps(grpc::internal::CallOpSetInterface*) /usr/include/grpcpp/impl/call.h:67 (fanoutd+0xa38f3)
    #5 grpc::internal::CallbackUnaryHandler<fanout::v1::PublishRequest, fanout::v1::PublishResponse>::ServerCallbackUnaryImpl::Finish(grpc::Status) /usr/include/grpcpp/impl/codegen/server_callback_handlers.h:146 (fanoutd+0x12877d)
"""

BIND = """    #6 grpc::ServerUnaryReactor::InternalBindCall(grpc::ServerCallbackUnary*) /usr/include/grpcpp/support/server_callback.h:750 (fanoutd+0xaa1af)
    #7 grpc::internal::CallbackUnaryHandler<fanout::v1::PublishRequest, fanout::v1::PublishResponse>::ServerCallbackUnaryImpl::SetupReactor(grpc::ServerUnaryReactor*) <null> (fanoutd+0x11b5e8)
"""

FINISH_FROM_GRPC_THREAD = """    #6 grpc::internal::CallbackWithSuccessTag::Run(bool) /usr/include/grpcpp/support/callback_common.h:212 (fanoutd+0xa996d)
"""

OUR_READ = """  Read of size 8 at 0x7b9c00001000 by thread T3:
    #0 std::deque<fanout::Job>::size() const /usr/include/c++/12/bits/stl_deque.h:1197 (fanoutd+0x35a000)
    #1 fanout::NatsBroker::Worker::queued() ../../cluster/nats_broker.cc:178 (fanoutd+0x35a100)
"""

OUR_OTHER_WRITE = """  Previous write of size 8 at 0x7b9c00001000 by thread T16:
    #0 std::deque<fanout::Job>::push_back(fanout::Job&&) /usr/include/c++/12/bits/stl_deque.h:1290 (fanoutd+0x35a200)
    #1 fanout::NatsBroker::Worker::Push(fanout::Job) ../../cluster/nats_broker.cc:167 (fanoutd+0x35a300)
"""

TAIL = """
  Thread T28 'nexting_thread' (tid=18265, running) created by main thread at:
    #0 pthread_create ../../../../src/libsanitizer/tsan/tsan_interceptors_posix.cpp:1001 (libtsan.so.2+0x5e686)

SUMMARY: ThreadSanitizer: data race
"""


def report(*accesses):
    return SEP + "WARNING: ThreadSanitizer: data race (pid=1)\n" + "\n".join(accesses) + TAIL + SEP


def judge(text):
    with tempfile.TemporaryDirectory() as d:
        with open(os.path.join(d, "report.1"), "w") as f:
            f.write(text)
        return subprocess.run([sys.executable, JUDGE, d], capture_output=True, text=True)


def main():
    cases = [
        ("a response finished before the reactor was bound, serialized as gRPC binds it",
         report(SERIALIZE_READ + BIND, OUR_WRITE), 0),
        ("our write against gRPC's serialization anywhere else",
         report(SERIALIZE_READ + FINISH_FROM_GRPC_THREAD, OUR_WRITE), 1),
        ("our code against our code", report(OUR_READ, OUR_OTHER_WRITE), 1),
    ]
    failed = 0
    for name, text, want in cases:
        got = judge(text)
        ok = got.returncode == want
        failed += not ok
        print(f"{'ok  ' if ok else 'FAIL'} {name}: exit {got.returncode}, want {want}")
        if not ok:
            print(got.stdout, got.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
