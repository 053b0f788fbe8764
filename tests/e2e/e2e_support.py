"""What the end-to-end tests in tests/e2e/ share: counting results, fanoutd on
port 0, and loading the descriptors server reflection sends.

Standard library only, so that every script here can import it whatever it
needs itself. The scripts run as `/usr/bin/python3 tests/e2e/SCRIPT.py ...`
from any directory; each puts its own directory first on sys.path and imports
this module from there.
"""

import json
import queue
import signal
import subprocess
import threading

TIMEOUT = 10.0  # seconds; bounds every single wait in a test


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

    def __init__(self, binary, node_id, io_threads=2):
        self.proc = subprocess.Popen(
            [binary, "--grpc_listen=127.0.0.1:0", "--ws_listen=127.0.0.1:0",
             f"--node_id={node_id}", f"--io_threads={io_threads}"],
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
