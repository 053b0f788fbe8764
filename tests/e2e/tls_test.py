"""TLS against the real fanoutd: wss:// and https:// on the WebSocket port,
TLS and mTLS on the gRPC port, certificates re-read on SIGHUP, and the clear
errors of a bad configuration, while a subscriber on the same node receives
everything published meanwhile.

Usage: /usr/bin/python3 tests/e2e/tls_test.py FANOUTD

Certificates are made per run with the openssl command line tool: a CA, a
server certificate for 127.0.0.1 and localhost, a client certificate the CA
signed and one another CA signed.
"""

import asyncio
import http.client
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time

import grpc
import websockets

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from e2e_support import compile_fanout_proto, TIMEOUT, Fanoutd, Fatal, Results  # noqa: E402



def openssl(*args):
    subprocess.run(["openssl", *args], check=True, timeout=TIMEOUT, capture_output=True)


def make_ca(d, name):
    key, cert = os.path.join(d, f"{name}.key"), os.path.join(d, f"{name}.pem")
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", key, "-out", cert, "-days", "2", "-subj", f"/CN={name}")
    return key, cert


def make_cert(d, name, ca_key, ca_cert, server):
    key, csr, cert = (os.path.join(d, f"{name}.key"), os.path.join(d, f"{name}.csr"),
                      os.path.join(d, f"{name}.pem"))
    openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout",
            key, "-out", csr, "-subj", f"/CN={name}")
    ext = os.path.join(d, f"{name}.ext")
    with open(ext, "w") as f:
        f.write("subjectAltName=DNS:localhost,IP:127.0.0.1\n" if server
                else "extendedKeyUsage=clientAuth\n")
    openssl("x509", "-req", "-in", csr, "-CA", ca_cert, "-CAkey", ca_key, "-CAcreateserial",
            "-out", cert, "-days", "2", "-extfile", ext)
    return key, cert


def as_bytes(message):
    """Raw subscribers get text frames for UTF-8 payloads, binary otherwise."""
    return message.encode() if isinstance(message, str) else message


async def log_line(server, text):
    """Waits until fanoutd's stderr has a line containing `text`."""
    for _ in range(int(TIMEOUT / 0.02)):
        if text in server.stderr_text():
            return True
        await asyncio.sleep(0.02)
    return False


def der_of(pem_file):
    with open(pem_file) as f:
        return ssl.PEM_cert_to_DER_cert(f.read())



def https_get(address, path, ca):
    host, port = address.rsplit(":", 1)
    conn = http.client.HTTPSConnection(host, int(port), timeout=TIMEOUT,
                                       context=ssl.create_default_context(cafile=ca))
    try:
        conn.request("GET", path)
        r = conn.getresponse()
        return r.status, r.read().decode()
    finally:
        conn.close()


def plain_http_answer(address):
    """What a plain-text HTTP request to the TLS port gets back (bytes)."""
    host, port = address.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=TIMEOUT) as s:
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        got = b""
        while True:
            try:
                chunk = s.recv(4096)
            except ConnectionResetError:
                break
            if not chunk:
                break
            got += chunk
        return got


def metric(address, ca, name):
    _, body = https_get(address, "/metrics", ca)
    for line in body.splitlines():
        if line.startswith(name + " "):
            return float(line.split(" ")[1])
    return None


def grpc_publish(pb2, pb2_grpc, address, credentials, topic, payload):
    """(ok, subscribers or the error's code name)."""
    if credentials is None:
        channel = grpc.insecure_channel(address)
    else:
        channel = grpc.secure_channel(address, credentials)
    with channel:
        try:
            r = pb2_grpc.FanoutStub(channel).Publish(
                pb2.PublishRequest(topic=topic, payload=payload), timeout=5)
            return True, r.subscribers
        except grpc.RpcError as e:
            return False, e.code().name


def startup_error(binary, args):
    """(exit status, stderr) of a fanoutd that must refuse to start."""
    p = subprocess.run([binary, "--grpc_listen=127.0.0.1:0", "--ws_listen=127.0.0.1:0", *args],
                       capture_output=True, timeout=TIMEOUT, stdin=subprocess.DEVNULL)
    return p.returncode, p.stderr.decode()


async def run(binary, tmp, results):
    pb2, pb2_grpc = compile_fanout_proto(tmp)
    ca_key, ca = make_ca(tmp, "test-ca")
    other_ca_key, other_ca = make_ca(tmp, "other-ca")
    server_key, server_cert = make_cert(tmp, "server", ca_key, ca, server=True)
    client_key, client_cert = make_cert(tmp, "client", ca_key, ca, server=False)
    rogue_key, rogue_cert = make_cert(tmp, "rogue", other_ca_key, other_ca, server=False)
    # The node reads these paths; renewals are written over them.
    live_cert, live_key = os.path.join(tmp, "live.pem"), os.path.join(tmp, "live.key")
    shutil.copy(server_cert, live_cert)
    shutil.copy(server_key, live_key)

    # Bad configurations say what is wrong and exit non-zero.
    code, err = startup_error(binary, [f"--tls_cert_file={live_cert}"])
    results.check("a certificate without its key is refused at start-up",
                  code != 0 and "--tls_key_file" in err, f"exit {code}: {err!r}")
    code, err = startup_error(binary, [f"--tls_cert_file={live_cert}",
                                       f"--tls_key_file={client_key}"])
    results.check("a key that is not the certificate's is refused, naming the file",
                  code != 0 and client_key in err, f"exit {code}: {err!r}")
    code, err = startup_error(binary, [f"--tls_cert_file={live_cert}", f"--tls_key_file={live_key}",
                                       f"--tls_client_ca_file={os.path.join(tmp, 'none.pem')}"])
    results.check("a missing client CA file is refused, naming the flag",
                  code != 0 and "--tls_client_ca_file" in err, f"exit {code}: {err!r}")

    server = Fanoutd(binary, "e2e-tls", extra_args=[
        f"--tls_cert_file={live_cert}", f"--tls_key_file={live_key}",
        f"--tls_client_ca_file={ca}", "--anonymous_publish=room",
        "--max_outbound_queue_bytes=16777216"])
    try:
        addresses = server.ready_line()
        ws_address, grpc_address = addresses["ws"], addresses["grpc"]
        trusting = ssl.create_default_context(cafile=ca)
        good = grpc.ssl_channel_credentials(
            root_certificates=open(ca, "rb").read(),
            private_key=open(client_key, "rb").read(),
            certificate_chain=open(client_cert, "rb").read())

        # A well-behaved subscriber for the whole run: it must get every
        # message published to "watched" whatever the others do.
        watcher = await websockets.connect(f"wss://{ws_address}/ws?topics=watched&format=raw",
                                           ssl=trusting, max_size=None)
        published = 0

        async def publish_watched():
            nonlocal published
            ok, n = await asyncio.to_thread(grpc_publish, pb2, pb2_grpc, grpc_address, good,
                                            "watched", f"w{published}".encode())
            if ok:
                published += 1
            return ok, n

        status, body = await asyncio.to_thread(https_get, ws_address, "/healthz", ca)
        results.expect_eq("https /healthz", (status, body), (200, "ok\n"))
        ok, n = await publish_watched()
        results.expect_eq("gRPC over mTLS publishes and counts the wss subscriber", (ok, n),
                          (True, 1))

        # gRPC without a certificate, with one from another CA, in plain text.
        ok, why = await asyncio.to_thread(
            grpc_publish, pb2, pb2_grpc, grpc_address,
            grpc.ssl_channel_credentials(root_certificates=open(ca, "rb").read()), "watched", b"x")
        results.expect_eq("gRPC over TLS without a client certificate is refused", (ok, why),
                          (False, "UNAVAILABLE"))
        ok, why = await asyncio.to_thread(
            grpc_publish, pb2, pb2_grpc, grpc_address,
            grpc.ssl_channel_credentials(root_certificates=open(ca, "rb").read(),
                                         private_key=open(rogue_key, "rb").read(),
                                         certificate_chain=open(rogue_cert, "rb").read()),
            "watched", b"x")
        results.expect_eq("gRPC with a certificate another CA signed is refused", (ok, why),
                          (False, "UNAVAILABLE"))
        ok, why = await asyncio.to_thread(grpc_publish, pb2, pb2_grpc, grpc_address, None,
                                          "watched", b"x")
        results.expect_eq("plain-text gRPC to the TLS port is refused", (ok, why),
                          (False, "UNAVAILABLE"))

        # Plain text on the WebSocket port gets no answer and is counted.
        before = await asyncio.to_thread(metric, ws_address, ca, "fanout_tls_handshake_failures_total")
        got = await asyncio.to_thread(plain_http_answer, ws_address)
        results.check("plain HTTP to the TLS port gets no plain-text answer",
                      not got.startswith(b"HTTP/"), repr(got[:80]))
        after = await asyncio.to_thread(metric, ws_address, ca, "fanout_tls_handshake_failures_total")
        results.check("fanout_tls_handshake_failures_total counts it",
                      before is not None and after == before + 1, f"{before} -> {after}")

        # Bulk over TLS: messages larger than a TLS record, and far more than
        # the socket buffers hold while the reader pauses (16 MiB queue), arrive whole and in
        # order (the node's writes retry what the socket could not take).
        reader = await websockets.connect(f"wss://{ws_address}/ws?topics=bulk&format=raw",
                                          ssl=trusting, max_size=None, max_queue=None)
        big = [os.urandom(100_000 + i) for i in range(80)]
        small = [f"m{i}".encode() * 100 for i in range(2000)]

        def publish_bulk():
            with grpc.secure_channel(grpc_address, good) as channel:
                stub = pb2_grpc.FanoutStub(channel)
                for p in big + small:
                    stub.Publish(pb2.PublishRequest(topic="bulk", payload=p), timeout=TIMEOUT)

        # 8 MB while the reader does not read: more than the kernel buffers.
        reader.transport.pause_reading()
        await asyncio.to_thread(publish_bulk)
        reader.transport.resume_reading()
        received = []
        try:
            while len(received) < len(big) + len(small):
                received.append(as_bytes(await asyncio.wait_for(reader.recv(), TIMEOUT)))
        except (asyncio.TimeoutError, websockets.ConnectionClosed) as e:
            results.check("bulk read", False, f"{type(e).__name__} after {len(received)}")
        results.check("80 x 100 KB and 2000 small messages arrive whole and in order over wss",
                      received == big + small, f"{len(received)} received")
        await reader.close()

        # Client messages over TLS: a 50 KB publish comes back to its sender.
        chat = await websockets.connect(f"wss://{ws_address}/ws?topics=room", ssl=trusting)
        text = "x" * 50_000
        await chat.send(json.dumps({"op": "publish", "topic": "room", "text": text, "id": 7}))
        replies = [json.loads(await asyncio.wait_for(chat.recv(), TIMEOUT)) for _ in range(2)]
        echoed = [m for m in replies if m.get("topic") == "room"]
        acked = [m for m in replies if m.get("id") == 7]
        results.check("a 50 KB client publish over wss is acknowledged and echoed",
                      len(echoed) == 1 and echoed[0].get("text") == text and acked
                      and acked[0].get("ok") is True, str([str(m)[:80] for m in replies]))
        await chat.close()

        # SIGHUP with a renewed certificate: new connections get it, the open
        # ones keep going. A broken file keeps the one in use.
        renewed_key, renewed_cert = make_cert(tmp, "renewed", ca_key, ca, server=True)
        shutil.copy(renewed_cert, live_cert)
        shutil.copy(renewed_key, live_key)
        server.proc.send_signal(signal.SIGHUP)
        await log_line(server, "TLS certificate")
        ws = await websockets.connect(f"wss://{ws_address}/ws", ssl=trusting)
        served = ws.transport.get_extra_info("ssl_object").getpeercert(binary_form=True)
        await ws.close()
        results.check("after SIGHUP new wss connections get the renewed certificate",
                      served == der_of(renewed_cert))

        # The gRPC port re-reads the same files by itself (gRPC's file
        # watcher, every 10 s): a new TLS connection to it gets the renewed
        # certificate within that.
        def grpc_served_cert():
            ctx = ssl.create_default_context(cafile=ca)
            ctx.load_cert_chain(client_cert, client_key)
            ctx.set_alpn_protocols(["h2"])
            host, port = grpc_address.rsplit(":", 1)
            with socket.create_connection((host, int(port)), timeout=TIMEOUT) as raw:
                with ctx.wrap_socket(raw, server_hostname=host) as tls:
                    return tls.getpeercert(binary_form=True)

        deadline = time.monotonic() + 25
        grpc_cert = None
        while time.monotonic() < deadline:
            grpc_cert = await asyncio.to_thread(grpc_served_cert)
            if grpc_cert == der_of(renewed_cert):
                break
            await asyncio.sleep(0.5)  # polling what the watcher has loaded, with a deadline
        results.check("within its 10 s refresh the gRPC port serves the renewed certificate",
                      grpc_cert == der_of(renewed_cert))
        with open(live_cert, "w") as f:
            f.write("not a certificate\n")
        server.proc.send_signal(signal.SIGHUP)
        await log_line(server, "reload failed")
        results.check("a broken certificate on SIGHUP is logged",
                      "reload failed" in server.stderr_text() and live_cert in server.stderr_text(),
                      server.stderr_text()[-300:])
        results.expect_eq("the parts that were fine were re-read all the same",
                          server.stderr_text().count("reloaded the token keys, API tokens"), 2)
        status, _ = await asyncio.to_thread(https_get, ws_address, "/healthz", ca)
        results.expect_eq("and the node keeps serving the certificate it had", status, 200)

        ok, n = await publish_watched()
        results.expect_eq("gRPC still publishes after the reloads", (ok, n), (True, 1))
        got = []
        try:
            while len(got) < published:
                got.append(as_bytes(await asyncio.wait_for(watcher.recv(), TIMEOUT)))
        except (asyncio.TimeoutError, websockets.ConnectionClosed) as e:
            results.check("watcher read", False, f"{type(e).__name__} after {len(got)}")
        results.expect_eq("the subscriber on the same node received everything published",
                          got, [f"w{i}".encode() for i in range(published)])
        await watcher.close()
    except Fatal as e:
        results.check("fanoutd started with TLS", False, str(e))
    finally:
        server.stop()
        if results.failed:
            print("--- fanoutd stderr ---\n" + server.stderr_text(), flush=True)


def main():
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    binary = os.path.abspath(sys.argv[1])
    results = Results()
    with tempfile.TemporaryDirectory(prefix="fanout-tls-") as tmp:
        try:
            asyncio.run(run(binary, tmp, results))
        except Exception as e:
            results.check("test ran to the end", False, f"{type(e).__name__}: {e}")
    return results.summary()


if __name__ == "__main__":
    sys.exit(main())
