#!/usr/bin/python3
"""e2e.api_examples: every shell example in docs/api.md, run as written.

docs/api.md shows its examples as `console` code blocks: a `$ ` line (and its
continuation lines) is a command, the lines up to the next `$ ` are what it
prints. This test extracts every command of every such block, runs it with
bash exactly as written, with `grpcurl` on the PATH being
tests/e2e/grpcurl_standin.py (reflection only, grpcurl's output format), against
a real fanoutd, and compares what it prints with what the page shows.

How the page's examples map onto a node:

- Each `## ` section starts with a fresh fanoutd (on port 0: the documented
  127.0.0.1:50051 is replaced by its real gRPC address) and one WebSocket
  client subscribed to `news`, the page's standing assumption. A section, or a
  later point in one, may ask for another starting point with a hidden comment,
  which also starts a fresh node:

      <!-- api-examples setup
      flags --history_size=10     flags the node starts with (any step order)
      client news,alerts          a WebSocket client: ws://WS/ws?topics=news,alerts
      run COMMAND                 a shell command (same PATH and directory), must succeed
      -->

  Clients are numbered 1, 2, ... in the order given, and the page calls them
  connection 1, 2, ...: a fresh node hands out ids from 1. The test asks
  ListSubscribers for each client's real id and replaces documented ids in
  `"connection_id":"N"` (commands) and `"connectionId": "N"` (output).
- `<!-- api-examples concurrent -->` before a block: that block's commands run
  while the last command of the block before it (a streaming call bounded with
  -max-time, such as Watch) is still running; the test starts that command,
  waits until its stream is open, runs the block, then waits for the command
  to end and checks what it printed.
- Output is stdout followed by stderr. Before comparing, volatile values are
  masked on both sides: timestamps, the port of `remoteAddress`, `nodeId`, and
  the lines `uptimeSeconds` and `queuedBytes`. `...text...` in the page's output
  matches anything. A command shown with no output is only checked for success.
- The exit status must be 0, or grpcurl's 64 + code when the page shows `ERROR:`.
- A successful Disconnect of a test client must close that client with the
  request's code (4000 when 0) and reason.

Usage: /usr/bin/python3 api_examples_test.py path/to/fanoutd
(Debian's grpcio, protobuf and websockets load only in /usr/bin/python3.)
"""

import asyncio
import json
import os
import re
import shlex
import shutil
import sys
import tempfile
from dataclasses import dataclass, field

import websockets

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from e2e_support import (DOC_GRPC_ADDRESS, TIMEOUT, Fanoutd, Fatal, Results,  # noqa: E402
                          diff, expected_status, finish_command, make_bin_dir,
                          output_matches, parse_console_block, start_command)

HERE = os.path.dirname(os.path.abspath(__file__))
DOC = os.path.normpath(os.path.join(HERE, "..", "..", "docs", "api.md"))
DOC_ADDRESS = DOC_GRPC_ADDRESS
DEFAULT_SETUP = ["client news"]



# --- the page ------------------------------------------------------------------

@dataclass
class Block:
    line: int
    examples: list
    concurrent: bool = False  # runs while the previous block's last command runs


@dataclass
class Section:
    title: str
    # ("setup", [steps], line) or ("block", Block)
    items: list = field(default_factory=list)


def parse_doc(text):
    sections = [Section("(top)")]
    lines = text.split("\n")
    i = 0
    concurrent_next = False
    while i < len(lines):
        line = lines[i]
        if line.startswith("```"):
            info = line[3:].strip()
            body_start = i + 1
            i += 1
            while i < len(lines) and not lines[i].startswith("```"):
                i += 1
            if info == "console":
                examples = parse_console_block(lines[body_start:i], body_start + 1)
                if examples:
                    sections[-1].items.append(
                        ("block", Block(body_start, examples, concurrent_next)))
            concurrent_next = False
            i += 1
            continue
        if line.startswith("## "):
            sections.append(Section(line[3:].strip()))
        elif line.strip() == "<!-- api-examples concurrent -->":
            concurrent_next = True
        elif line.strip() == "<!-- api-examples setup":
            start = i + 1
            steps = []
            i += 1
            while i < len(lines) and lines[i].strip() != "-->":
                if lines[i].strip():
                    steps.append(lines[i].strip())
                i += 1
            sections[-1].items.append(("setup", steps, start))
        i += 1
    return [s for s in sections if any(kind == "block" for kind, *_ in s.items)]


# --- running a section ---------------------------------------------------------

CONNECTION_ID_IN_COMMAND = re.compile(r'("connection_id"\s*:\s*")(\d+)(")')
CONNECTION_ID_IN_OUTPUT = re.compile(r'("connectionId": ")(\d+)(")')
# A topic's epoch is the node's boot id (8 hex digits, new at every start)
# and a counter. The page's commands use the boot id its outputs show; the
# test replaces it with the real node's, learnt from the first output that
# shows an epoch, as a reader copies the epoch grpcurl printed.
DOC_BOOT_ID = "5f3c9a1e"
EPOCH_IN_OUTPUT = re.compile(r'"epoch": "([0-9a-f]{8})-')


class Node:
    """A fresh fanoutd, its WebSocket clients and a scratch directory."""

    def __init__(self, binary, bin_dir, name, flags=()):
        self.server = Fanoutd(binary, name, extra_args=flags)
        self.bin_dir = bin_dir
        self.cwd = tempfile.mkdtemp(prefix="fanout-api-examples-")
        self.clients = []   # websockets connections, client k at index k-1
        self.ids = {}       # documented id -> real id, both strings
        self.boot_id = None  # the real node's part of every epoch, once seen
        addresses = self.server.ready_line()
        self.grpc, self.ws = addresses["grpc"], addresses["ws"]

    def substitute(self, command):
        command = command.replace(DOC_ADDRESS, self.grpc)
        if self.boot_id:
            command = command.replace(DOC_BOOT_ID, self.boot_id)
        return CONNECTION_ID_IN_COMMAND.sub(
            lambda m: m.group(1) + self.ids.get(m.group(2), m.group(2)) + m.group(3), command)

    def substitute_output(self, expected):
        return CONNECTION_ID_IN_OUTPUT.sub(
            lambda m: m.group(1) + self.ids.get(m.group(2), m.group(2)) + m.group(3), expected)

    async def start(self, command, **env):
        return await start_command(command, self.cwd, self.bin_dir, **env)

    async def finish(self, proc, timeout):
        return await finish_command(proc, timeout)

    async def run(self, command, timeout=TIMEOUT):
        code, out, err = await self.finish(await self.start(self.substitute(command)), timeout)
        m = EPOCH_IN_OUTPUT.search(out)
        if m and not self.boot_id:
            self.boot_id = m.group(1)
        return code, out, err

    async def setup(self, steps):
        for step in steps:
            verb, _, arg = step.partition(" ")
            if verb == "client":
                topics = arg.strip()
                if not topics:
                    raise Fatal("a setup client needs topics (its id is found through them)")
                ws = await asyncio.wait_for(
                    websockets.connect(f"ws://{self.ws}/ws?topics={topics}"), TIMEOUT)
                self.clients.append((ws, topics.split(",")[0]))
            elif verb == "flags":
                continue  # the node was started with them
            elif verb == "run":
                code, out, err = await self.run(arg)
                if code != 0:
                    raise Fatal(f"setup `{arg}` exited {code}: {out}{err}")
            else:
                raise Fatal(f"unknown setup step {step!r}")
        # The ids the page assumes are 1, 2, ...; learn the real ones as a user
        # would, from ListSubscribers, matching each client's own address.
        for k, (ws, topic) in enumerate(self.clients, start=1):
            code, out, err = await self.run(
                f"grpcurl -plaintext -d '{{\"topic\":\"{topic}\",\"page_size\":1000}}' "
                f"{DOC_ADDRESS} fanout.v1.Fanout/ListSubscribers")
            if code != 0:
                raise Fatal(f"ListSubscribers for setup client {k}: {err}")
            host, port = ws.local_address[:2]
            listed = json.loads(out).get("subscribers", [])
            match = [s["connectionId"] for s in listed
                     if s.get("remoteAddress") == f"{host}:{port}"]
            if len(match) != 1:
                raise Fatal(f"setup client {k} ({host}:{port}) not listed on {topic}: {out}")
            self.ids[str(k)] = match[0]

    async def close(self):
        for ws, _ in self.clients:
            await ws.close()
        running = self.server.proc.poll() is None
        self.server.stop()
        shutil.rmtree(self.cwd, ignore_errors=True)
        return running


def describe(example):
    first = example.command.split("\n")[0]
    return f"api.md:{example.line}: {first[:90]}"


def request_json(command):
    """The JSON after -d in a grpcurl command, or None."""
    try:
        words = shlex.split(command)
    except ValueError:
        return None
    for i, w in enumerate(words[:-1]):
        if w == "-d" and words[i + 1] != "@":
            try:
                return json.loads(words[i + 1])
            except ValueError:
                return None
    return None


async def check_example(node, example, result, results):
    code, out, err = result
    name = describe(example)
    if code is None:
        results.check(name, False, err)
        return
    actual = out + err
    want_status = expected_status(example.expected)
    ok = results.check(f"{name} (exit status)", code == want_status,
                       f"  exit status {code}, want {want_status}\n  stdout: {out!r}\n"
                       f"  stderr: {err!r}")
    if example.expected:
        expected = node.substitute_output(example.expected)
        results.check(f"{name} (output)", output_matches(expected, actual),
                      diff(expected, actual, "docs/api.md"))
    if ok and code == 0 and "fanout.v1.Fanout/Disconnect" in example.command:
        await check_disconnect(node, example, results)


async def check_disconnect(node, example, results):
    request = request_json(example.command) or {}
    documented = request.get("connection_id", request.get("connectionId"))
    if documented is None or not documented.isdigit() or not 1 <= int(documented) <= len(node.clients):
        return
    ws, _ = node.clients[int(documented) - 1]
    want = (request.get("code") or 4000, request.get("reason", ""))
    try:
        await asyncio.wait_for(ws.wait_closed(), TIMEOUT)
        got = (ws.close_code, ws.close_reason)
    except asyncio.TimeoutError:
        got = "still open"
    results.check(f"{describe(example)} (client {documented} closed with {want[0]} "
                  f"{want[1]!r})", got == want, f"  got {got!r}")


OPEN_TIMEOUT = TIMEOUT


async def run_background(node, example, signal_path):
    if "-max-time" not in example.command:
        raise Fatal(f"api.md:{example.line}: a command other commands run alongside must end "
                    f"by itself: give it -max-time")
    proc = await node.start(node.substitute(example.command), GRPCURL_STANDIN_OPENED=signal_path)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + OPEN_TIMEOUT
    while not os.path.exists(signal_path):
        if proc.returncode is not None or loop.time() > deadline:
            break
        await asyncio.sleep(0.02)
    return proc


async def run_section(binary, bin_dir, section, results):
    node = None
    pending_setup = DEFAULT_SETUP
    items = section.items
    try:
        for index, item in enumerate(items):
            if item[0] == "setup":
                pending_setup = item[1]
                continue
            block = item[1]
            if pending_setup is not None:
                if block.concurrent:
                    raise Fatal(f"api.md:{block.line}: a concurrent block follows a setup")
                if node:
                    await close_node(node, section, results)
                flags = [f for step in pending_setup if step.startswith("flags ")
                         for f in shlex.split(step[len("flags "):])]
                node = Node(binary, bin_dir, "api-examples", flags)
                await node.setup(pending_setup)
                pending_setup = None
            if block.concurrent:
                continue  # run by the block before it
            following = items[index + 1][1] if index + 1 < len(items) else None
            concurrent = following if (following is not None and isinstance(following, Block)
                                       and following.concurrent) else None
            examples = block.examples[:-1] if concurrent else block.examples
            for example in examples:
                await check_example(node, example, await node.run(example.command), results)
            if concurrent:
                background = block.examples[-1]
                signal_path = os.path.join(node.cwd, ".stream-open")
                proc = await run_background(node, background, signal_path)
                results.check(f"{describe(background)} (stream open)",
                              os.path.exists(signal_path), "  the stream did not open")
                for example in concurrent.examples:
                    await check_example(node, example, await node.run(example.command), results)
                max_time = float(re.search(r"-max-time[ =]([0-9.]+)", background.command).group(1))
                await check_example(node, background,
                                    await node.finish(proc, max_time + TIMEOUT), results)
    finally:
        if node:
            await close_node(node, section, results)


async def close_node(node, section, results):
    running = await node.close()
    if not results.check(f"[{section.title}] fanoutd ran through the section", running):
        print("--- fanoutd stderr ---\n" + node.server.stderr_text(), flush=True)


async def main_async(binary, results):
    with open(DOC, encoding="utf-8") as f:
        sections = parse_doc(f.read())
    commands = sum(len(i[1].examples) for s in sections for i in s.items if i[0] == "block")
    grpcurl_commands = sum(1 for s in sections for i in s.items if i[0] == "block"
                           for e in i[1].examples if re.search(r"\bgrpcurl\b", e.command))
    print(f"docs/api.md: {len(sections)} sections with examples, {commands} commands, "
          f"{grpcurl_commands} of them grpcurl", flush=True)
    results.check("docs/api.md has grpcurl examples", grpcurl_commands > 0)
    with tempfile.TemporaryDirectory(prefix="fanout-api-examples-bin-") as tmp:
        bin_dir = make_bin_dir(tmp)
        for section in sections:
            print(f"## {section.title}", flush=True)
            try:
                await run_section(binary, bin_dir, section, results)
            except Fatal as e:
                results.check(f"[{section.title}] section ran to the end", False, f"  {e}")


def main():
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    binary = os.path.abspath(sys.argv[1])
    results = Results(detail_separator="\n")
    try:
        asyncio.run(main_async(binary, results))
    except Exception as e:  # report anything unexpected as a failure
        results.check("test ran to the end", False, f"  {type(e).__name__}: {e}")
    return results.summary()


if __name__ == "__main__":
    sys.exit(main())
