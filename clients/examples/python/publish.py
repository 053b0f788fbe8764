#!/usr/bin/python3
"""Publishes one message to a fanout node over gRPC.

Prints the topic sequence number and the number of subscribers it reached:

    PYTHONPATH=gen publish.py --addr 127.0.0.1:50051 --topic news --payload 'hello'

The stubs (fanout/v1/fanout_pb2*.py) are generated from proto/ into a
directory on PYTHONPATH; see README.md.
"""
import argparse
import os
import sys

import grpc
from fanout.v1 import fanout_pb2, fanout_pb2_grpc


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--addr", default="127.0.0.1:50051", help="fanoutd gRPC HOST:PORT")
    parser.add_argument("--topic", default="news")
    parser.add_argument("--payload", default="", help="message body, sent as bytes")
    args = parser.parse_args()

    with grpc.insecure_channel(args.addr) as channel:
        stub = fanout_pb2_grpc.FanoutStub(channel)
        try:
            # os.fsencode gives back the exact bytes of the argument.
            resp = stub.Publish(
                fanout_pb2.PublishRequest(topic=args.topic, payload=os.fsencode(args.payload)),
                timeout=10,
            )
        except grpc.RpcError as err:
            print(f"publish: {err.code().name}: {err.details()}", file=sys.stderr)
            return 1
    print(f"seq={resp.seq} subscribers={resp.subscribers}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
