#!/usr/bin/python3
"""e2e.metrics_promtool: /metrics after real traffic passes `promtool check metrics`.

Starts fanoutd on port 0, makes traffic that moves every counter it can without
waiting on a timer (a subscriber, control messages good and bad, a refused
upgrade, publishes and a broadcast over gRPC), scrapes /metrics, and checks:
promtool accepts it, every series docs/operations.md lists is there, and the
counters say what the traffic did.

Usage: /usr/bin/python3 metrics_promtool_test.py path/to/fanoutd [path/to/promtool]
"""

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request

import grpc
import websockets

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from e2e_support import compile_fanout_proto, TIMEOUT, Fanoutd, Fatal, Results  # noqa: E402


# Every series /metrics serves, as docs/operations.md lists them.
EXPECTED_SERIES = {
    "fanout_node_info": "gauge",
    "fanout_uptime_seconds": "gauge",
    "fanout_topics": "gauge",
    "fanout_subscriptions": "gauge",
    "fanout_topics_retained": "gauge",
    "fanout_presence_topics": "gauge",
    "fanout_history_messages": "gauge",
    "fanout_history_bytes": "gauge",
    "fanout_history_bytes_limit": "gauge",
    "fanout_history_evicted_total": "counter",
    "fanout_messages_in_total": "counter",
    "fanout_bytes_in_total": "counter",
    "fanout_pending_publish_bytes": "gauge",
    "fanout_pending_publish_bytes_limit": "gauge",
    "fanout_publish_rejected_total": "counter",
    "fanout_watchers": "gauge",
    "fanout_connections": "gauge",
    "fanout_connections_closing": "gauge",
    "fanout_handshakes_in_progress": "gauge",
    "fanout_connections_accepted_total": "counter",
    "fanout_connections_rejected_total": "counter",
    "fanout_messages_out_total": "counter",
    "fanout_bytes_out_total": "counter",
    "fanout_client_messages_in_total": "counter",
    "fanout_client_bytes_in_total": "counter",
    "fanout_slow_client_disconnects_total": "counter",
    "fanout_conflated_total": "counter",
    "fanout_rate_limit_disconnects_total": "counter",
    "fanout_client_errors_total": "counter",
    "fanout_protocol_error_disconnects_total": "counter",
    "fanout_message_too_big_disconnects_total": "counter",
    "fanout_idle_disconnects_total": "counter",
    "fanout_close_timeouts_total": "counter",
    "fanout_handshake_timeouts_total": "counter",
    "fanout_auth_failures_total": "counter",
    "fanout_token_expirations_total": "counter",
    "fanout_handshakes_dropped_total": "counter",
    "fanout_tls_handshake_failures_total": "counter",
    "fanout_grpc_auth_failures_total": "counter",
    "fanout_connections_authenticating": "gauge",
}


def start_fanoutd(binary):
    server = Fanoutd(binary, "e2e-metrics")
    try:
        return server, server.ready_line()
    except Fatal:
        server.kill()
        raise RuntimeError("fanoutd gave no ready line: " + server.stderr_text())



def http_get(url):
    """Returns (status, body) without raising on 4xx/5xx."""
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def parse_metrics(text):
    """{family: type} from # TYPE lines and {series-with-labels: value}."""
    types, values = {}, {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            types[name] = kind
        elif line and not line.startswith("#"):
            series, value = line.rsplit(" ", 1)
            values[series] = float(value)
    return types, values


async def traffic(pb2, pb2_grpc, addresses):
    ws_address = addresses["ws"]
    # A refused upgrade (bad topic) and one with a bad format.
    async def refused(url):
        try:
            ws = await asyncio.wait_for(websockets.connect(url), TIMEOUT)
            await ws.close()
            return None
        except websockets.exceptions.InvalidStatusCode as e:
            return e.status_code
    statuses = [await refused(f"ws://{ws_address}/ws?topics=bad%20topic"),
                await refused(f"ws://{ws_address}/ws?format=xml")]

    ws = await asyncio.wait_for(websockets.connect(f"ws://{ws_address}/ws?topics=news"), TIMEOUT)
    # Three control messages: two answered ok, one answered with an error.
    await ws.send('{"op":"subscribe","topic":"alerts","id":1}')
    await ws.send('{"op":"ping","id":2}')
    await ws.send('{"op":"jump","id":3}')
    replies = [json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT)) for _ in range(3)]

    with grpc.insecure_channel(addresses["grpc"]) as channel:
        stub = pb2_grpc.FanoutStub(channel)
        stub.Publish(pb2.PublishRequest(topic="news", payload=b"hello"), timeout=TIMEOUT)
        stub.Publish(pb2.PublishRequest(topic="alerts", payload=b'{"level":1}'), timeout=TIMEOUT)
        stub.Broadcast(pb2.BroadcastRequest(payload=b"bye"), timeout=TIMEOUT)
    frames = [await asyncio.wait_for(ws.recv(), TIMEOUT) for _ in range(3)]
    return statuses, replies, frames, ws


async def run(binary, promtool, tmp, results):
    pb2, pb2_grpc = compile_fanout_proto(tmp)
    server, addresses = start_fanoutd(binary)
    proc = server.proc
    try:
        statuses, replies, frames, ws = await traffic(pb2, pb2_grpc, addresses)
        results.expect_eq("refused upgrades answer 400", statuses, [400, 400])
        results.expect_eq("control replies",
                          [r.get("ok") or r["error"]["code"] for r in replies],
                          [True, True, "unknown_op"])
        # A topic's epoch differs from run to run.
        results.expect_eq("deliveries", [re.sub(r',"epoch":"[^"]*"', "", f) for f in frames], [
            '{"topic":"news","seq":1,"text":"hello"}',
            '{"topic":"alerts","seq":1,"data":{"level":1}}',
            '{"broadcast":true,"seq":1,"text":"bye"}'])

        status, text = await asyncio.to_thread(http_get, f"http://{addresses['ws']}/metrics")
        results.expect_eq("/metrics answers 200", status, 200)
        check = await asyncio.to_thread(
            subprocess.run, [promtool, "check", "metrics"], input=text.encode(),
            capture_output=True, timeout=TIMEOUT)
        results.check("promtool check metrics accepts /metrics", check.returncode == 0,
                      (check.stdout + check.stderr).decode() + "\n--- /metrics ---\n" + text)

        types, values = parse_metrics(text)
        results.expect_eq("the documented series and their types", types, EXPECTED_SERIES)
        want = {
            'fanout_node_info{node_id="e2e-metrics"}': 1,
            "fanout_topics": 2,
            "fanout_subscriptions": 2,
            "fanout_topics_retained": 0,
            "fanout_history_messages": 0,
            "fanout_history_bytes": 0,
            "fanout_history_bytes_limit": 64 << 20,
            "fanout_history_evicted_total": 0,
            "fanout_messages_in_total": 3,
            "fanout_bytes_in_total": 5 + 11 + 3,
            "fanout_connections": 1,
            "fanout_connections_accepted_total": 1,
            'fanout_connections_rejected_total{reason="bad_request"}': 1,
            'fanout_connections_rejected_total{reason="bad_topic"}': 1,
            'fanout_connections_rejected_total{reason="origin"}': 0,
            'fanout_connections_rejected_total{reason="too_many_connections"}': 0,
            'fanout_connections_rejected_total{reason="too_many_per_address"}': 0,
            'fanout_connections_rejected_total{reason="too_many_topics"}': 0,
            'fanout_connections_rejected_total{reason="unauthorized"}': 0,
            'fanout_connections_rejected_total{reason="forbidden"}': 0,
            'fanout_connections_rejected_total{reason="shutting_down"}': 0,
            'fanout_publish_rejected_total{reason="invalid_topic"}': 0,
            'fanout_publish_rejected_total{reason="payload_too_large"}': 0,
            'fanout_publish_rejected_total{reason="overloaded"}': 0,
            'fanout_publish_rejected_total{reason="shutting_down"}': 0,
            "fanout_connections_closing": 0,
            # The scrape itself: a request is in progress until answered.
            "fanout_handshakes_in_progress": 1,
            "fanout_watchers": 0,
            "fanout_messages_out_total": 3,
            "fanout_bytes_out_total": sum(2 + len(f) for f in frames),
            "fanout_client_messages_in_total": 3,
            "fanout_client_errors_total": 1,
            "fanout_slow_client_disconnects_total": 0,
            "fanout_rate_limit_disconnects_total": 0,
        }
        got = {k: values.get(k) for k in want}
        results.expect_eq("counters match the traffic", got, want)
        results.check("fanout_client_bytes_in_total counts the control messages",
                      values.get("fanout_client_bytes_in_total") == sum(
                          len(m) for m in ('{"op":"subscribe","topic":"alerts","id":1}',
                                           '{"op":"ping","id":2}', '{"op":"jump","id":3}')),
                      f"got {values.get('fanout_client_bytes_in_total')}")

        status, body = await asyncio.to_thread(http_get, f"http://{addresses['ws']}/healthz")
        results.expect_eq("/healthz while serving", (status, body), (200, "ok\n"))

        proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(ws.wait_closed(), TIMEOUT)
        results.expect_eq("SIGTERM closes the subscriber with 1001", ws.close_code, 1001)
        code = await asyncio.to_thread(proc.wait, TIMEOUT)
        results.expect_eq("fanoutd exits 0 on SIGTERM", code, 0)
    finally:
        server.kill()
        if results.failed:
            print("--- fanoutd stderr ---\n" + server.stderr_text(), flush=True)


def main():
    if len(sys.argv) not in (2, 3):
        print(__doc__, file=sys.stderr)
        return 2
    binary = os.path.abspath(sys.argv[1])
    promtool = sys.argv[2] if len(sys.argv) == 3 else "promtool"
    results = Results()
    with tempfile.TemporaryDirectory(prefix="fanout-e2e-") as tmp:
        try:
            asyncio.run(run(binary, promtool, tmp, results))
        except Exception as e:
            results.check("test ran to the end", False, f"{type(e).__name__}: {e}")
    return results.summary()


if __name__ == "__main__":
    sys.exit(main())
