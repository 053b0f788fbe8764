"""What the end-to-end tests in tests/e2e/ share: counting results, fanoutd on
port 0, loading the descriptors server reflection sends, and running the
console examples of a page (README.md, docs/api.md) as written.

Standard library only, so that every script here can import it whatever it
needs itself. The scripts run as `/usr/bin/python3 tests/e2e/SCRIPT.py ...`
from any directory; each puts its own directory first on sys.path and imports
this module from there.
"""

import asyncio
import difflib
import importlib
import json
import os
import queue
import re
import shlex
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass

TIMEOUT = 10.0  # seconds; bounds every single wait in a test
GRPCURL_STANDIN = os.path.join(os.path.dirname(os.path.abspath(__file__)), "grpcurl_standin.py")
DOC_GRPC_ADDRESS = "127.0.0.1:50051"  # what the pages show: `make run`'s addresses
DOC_WS_ADDRESS = "127.0.0.1:8080"
PROTO_ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..",
                                           "proto"))
GRPC_PYTHON_PLUGIN = "/usr/bin/grpc_python_plugin"


def compile_fanout_proto(tmp):
    """fanout.proto's Python modules (Debian's protoc and grpc plugin), built
    into `tmp` and imported: (fanout_pb2, fanout_pb2_grpc)."""
    subprocess.run(["protoc", f"-I{PROTO_ROOT}", f"--python_out={tmp}", f"--grpc_python_out={tmp}",
                    f"--plugin=protoc-gen-grpc_python={GRPC_PYTHON_PLUGIN}",
                    "fanout/v1/fanout.proto"], check=True, timeout=TIMEOUT)
    sys.path.insert(0, tmp)
    return (importlib.import_module("fanout.v1.fanout_pb2"),
            importlib.import_module("fanout.v1.fanout_pb2_grpc"))


class Results:
    """Counts checks, printing `ok   NAME` or `FAIL NAME: DETAIL` for each.

    `detail_separator` goes between the name and the detail of a failure (": ",
    or "\\n" for details that are blocks of text of their own).
    """

    def __init__(self, detail_separator=": "):
        self.passed = 0
        self.failed = 0
        self.detail_separator = detail_separator

    def check(self, name, ok, detail=""):
        if ok:
            self.passed += 1
            print(f"ok   {name}", flush=True)
        else:
            self.failed += 1
            print(f"FAIL {name}" + (f"{self.detail_separator}{detail}" if detail else ""),
                  flush=True)
        return ok

    def expect_eq(self, name, got, want):
        return self.check(name, got == want, f"got {got!r}, want {want!r}")

    def summary(self):
        """Prints the last line, `N passed, M failed`; returns the exit status."""
        print(f"{self.passed} passed, {self.failed} failed", flush=True)
        return 1 if self.failed else 0


class Fatal(Exception):
    """A failure after which the rest of the test (or a section of it) cannot run."""


class Fanoutd:
    """fanoutd on port 0: reads its first stdout line, keeps its stderr."""

    def __init__(self, binary, node_id, io_threads=2, extra_args=()):
        self.proc = subprocess.Popen(
            [binary, "--grpc_listen=127.0.0.1:0", "--ws_listen=127.0.0.1:0",
             f"--node_id={node_id}", f"--io_threads={io_threads}", *extra_args],
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
        """The addresses of the ready line, {"grpc": ..., "ws": ...}; Fatal without one."""
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

    def stop(self):
        """SIGTERM, then SIGKILL if it has not exited within TIMEOUT + 5 s."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=TIMEOUT + 5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=TIMEOUT)


# --- server reflection ----------------------------------------------------------
# The reflection clients (reflection_test.py, grpcurl_standin.py) bring protobuf
# themselves: these functions only order what they are handed.

def add_file_descriptors(files, serialized, parse, fetch_dependency, add, error):
    """Adds to a descriptor pool the files in `serialized` it lacks, dependencies first.

    files: name -> FileDescriptorProto of the files already added; updated here.
    parse(raw): the FileDescriptorProto of one serialized file.
    fetch_dependency(name, fdp): the serialized files the server sends for the
        file `name`, which `fdp` imports but the server did not send with it.
    add(fdp): adds one file to the pool.
    error: the exception class raised when the dependencies cannot be ordered.
    """
    pending = {}
    for raw in serialized:
        fdp = parse(raw)
        if fdp.name not in files:
            pending[fdp.name] = fdp
    # Dependencies the server did not send: ask by file name, as grpcurl does.
    for fdp in list(pending.values()):
        for dep in fdp.dependency:
            if dep not in files and dep not in pending:
                add_file_descriptors(files, fetch_dependency(dep, fdp), parse,
                                     fetch_dependency, add, error)
    # The pool needs a file's dependencies before the file.
    while pending:
        ready = [f for f in pending.values() if all(d in files for d in f.dependency)]
        if not ready:
            raise error(f"unresolvable dependencies among {sorted(pending)}")
        for fdp in ready:
            if fdp.name not in files:  # a dependency lookup may have added it
                add(fdp)
                files[fdp.name] = fdp
            del pending[fdp.name]


def method_proto(files, method, error):
    """The MethodDescriptorProto the server sent for `method`: the streaming flags
    live there, not in the MethodDescriptor."""
    service = method.containing_service
    for s in files[service.file.name].service:
        if s.name == service.name:
            for m in s.method:
                if m.name == method.name:
                    return m
    raise error(f"no descriptor for {method.full_name}")


# --- console examples of a page ---------------------------------------------------
# A page shows its examples as `console` code blocks: a `$ ` line (and its
# continuation lines) is a command, the lines up to the next `$ ` are what it
# prints. The tests run each command with bash, as written, with `grpcurl` on
# the PATH being grpcurl_standin.py, and compare what it prints with the page.

@dataclass
class Example:
    line: int          # 1-based line of the `$ ` in the page
    command: str       # as typed, continuation lines included
    expected: str      # what the page shows it printing ("" when nothing)


def command_complete(text):
    """Whether bash would run `text` as it stands, or wait for more lines."""
    if text.rstrip().endswith(("\\", "|", "&&", "||")):
        return False
    try:
        shlex.split(text, comments=False, posix=True)
    except ValueError:  # an open quote
        return False
    return True


HEREDOC = re.compile(r"<<-?\s*(['\"]?)([A-Za-z_][A-Za-z0-9_]*)\1")


def parse_console_block(lines, first_line):
    """Examples of one console block: `lines` are its content, `first_line` its number."""
    examples = []
    i = 0
    while i < len(lines):
        if not lines[i].startswith("$ "):
            i += 1
            continue
        start = i
        command = lines[i][2:]
        i += 1
        while not command_complete(command) and i < len(lines):
            command += "\n" + lines[i]
            i += 1
        heredoc = HEREDOC.search(command)
        if heredoc:
            while i < len(lines):
                command += "\n" + lines[i]
                i += 1
                if lines[i - 1] == heredoc.group(2):
                    break
        output = []
        while i < len(lines) and not lines[i].startswith("$ "):
            output.append(lines[i])
            i += 1
        while output and not output[-1].strip():
            output.pop()
        examples.append(Example(first_line + start, command, "\n".join(output)))
    return examples


GRPC_CODES = {  # grpc-go's names, as grpcurl prints them
    "Canceled": 1, "Unknown": 2, "InvalidArgument": 3, "DeadlineExceeded": 4, "NotFound": 5,
    "AlreadyExists": 6, "PermissionDenied": 7, "ResourceExhausted": 8,
    "FailedPrecondition": 9, "Aborted": 10, "OutOfRange": 11, "Unimplemented": 12,
    "Internal": 13, "Unavailable": 14, "DataLoss": 15, "Unauthenticated": 16,
}

# Before comparing, volatile values are masked on both sides: timestamps, the
# port of `remoteAddress`, `nodeId`, a topic's `epoch` (it changes with every
# start of a node), and the lines `uptimeSeconds` and `queuedBytes`.
# `...text...` in the page's output matches anything.
VOLATILE = [
    (re.compile(r'("epoch": ?)"[^"]*"'), r'\1"<epoch>"'),
    (re.compile(r'"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z"'), '"<time>"'),
    (re.compile(r'("remoteAddress": "[^"]*:)\d+"'), r'\1<port>"'),
    (re.compile(r'("nodeId": )"[^"]*"'), r'\1"<node>"'),
    (re.compile(r'^\s*"(uptimeSeconds|queuedBytes)": "\d+",?\n', re.M), ""),
]
ELISION = re.compile(r"[ \t]*\.\.\.[^\n]*?\.\.\.[ \t]*")


def normalize(text):
    text = text.rstrip("\n") + "\n"
    for pattern, replacement in VOLATILE:
        text = pattern.sub(replacement, text)
    return text.rstrip("\n")


def output_matches(expected, actual):
    expected, actual = normalize(expected), normalize(actual)
    if "..." not in expected:
        return expected == actual
    parts = ELISION.split(expected)
    pattern = ".*?".join(re.escape(p) for p in parts)
    return re.fullmatch(pattern, actual, re.S) is not None


def expected_status(expected):
    """The exit status the page implies: 0, or 64 + the code of its ERROR."""
    m = re.search(r"^ERROR:\n  Code: (\w+)$", expected, re.M)
    return 64 + GRPC_CODES[m.group(1)] if m else 0


def diff(expected, actual, doc):
    """A unified diff of what `doc` shows and what ran, both masked."""
    expected, actual = normalize(expected).split("\n"), normalize(actual).split("\n")
    text = "\n".join(difflib.unified_diff(expected, actual, f"{doc} (masked)",
                                          "actual (masked)", lineterm=""))
    if [line.rstrip() for line in expected] == [line.rstrip() for line in actual]:
        text += (f"\n(only trailing spaces differ: grpcurl prints an empty message as `{{`, "
                 f"a line of two spaces, `}}`; an editor may have stripped them from {doc})")
    return text


def make_bin_dir(tmp):
    """A directory in `tmp` with a `grpcurl` that runs grpcurl_standin.py, to
    put first on PATH; returns its path."""
    bin_dir = os.path.join(tmp, "bin")
    os.mkdir(bin_dir)
    path = os.path.join(bin_dir, "grpcurl")
    with open(path, "w") as f:
        f.write(f'#!/bin/sh\nexec /usr/bin/python3 "{GRPCURL_STANDIN}" "$@"\n')
    os.chmod(path, 0o755)
    return bin_dir


async def run_command(command, cwd, bin_dir, timeout=TIMEOUT, **env):
    """Runs `command` with bash in `cwd`, `bin_dir` first on PATH and `env` added.
    Returns (exit status, stdout, stderr); the status is None, with a note in
    stderr, for a command still running after `timeout` seconds (then killed)."""
    return await finish_command(await start_command(command, cwd, bin_dir, **env), timeout)


async def start_command(command, cwd, bin_dir, **env):
    full_env = dict(os.environ)
    full_env["PATH"] = bin_dir + os.pathsep + full_env.get("PATH", "/usr/bin:/bin")
    full_env.update(env)
    return await asyncio.create_subprocess_exec(
        "/bin/bash", "-c", command, cwd=cwd, env=full_env,
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE)


async def finish_command(proc, timeout):
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except asyncio.TimeoutError:
        proc.kill()
        await proc.wait()
        return None, "", f"(still running after {timeout}s; killed)"
    return proc.returncode, out.decode("utf-8", "replace"), err.decode("utf-8", "replace")
