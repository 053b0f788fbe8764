#!/usr/bin/python3
"""Judges the ThreadSanitizer reports of a test run: fails on any report that
involves fanout's code, lists the ones that are entirely inside gRPC.

Why not a suppressions file: Debian builds gRPC, protobuf and abseil without
TSan, so TSan cannot see the synchronization inside them (gRPC hands a
reactor, a call's tag or a message from one of its threads to another
through its completion queue). Every callback of gRPC's API then looks racy.
A suppression such as `race:libgrpc` matches any report with a gRPC frame
anywhere on a stack, and since every reactor callback is called from gRPC,
that hides every race in service/. Suppressions match frames; the rule we
want is about who made the racing access, so this script applies it:

  Each racing access (current and previous) was made by whoever owns the
  innermost frame that is not library glue (std::, absl::, boost::, the
  protobuf runtime and generated messages). A report is ours, and fails the
  run, when any of its accesses was made by fanout's code; it is gRPC's own
  when every access was made by gRPC (grpc::, grpc_core::, its libraries).

So gRPC's header code touching its own call state inside our StartWrite is
gRPC's, while our reactor touching its deque is ours wherever it is called
from. One more pattern is gRPC's: a message we hand to StartRead (having
constructed it, or read the previous request out of it), which gRPC then
fills on another thread (SerializationTraits<...>::Deserialize) before our
OnReadDone runs; the hand-over is again gRPC's synchronization. A third: a
unary response we filled in and Finish()ed before gRPC had bound the reactor
(the handler had returned, gRPC had not yet called SetupReactor), which gRPC
keeps in the reactor's backlog and serializes on the binding thread
(ServerUnaryReactor::InternalBindCall -> Finish); the hand-over goes through
the reactor's stream_mu_, an uninstrumented absl::Mutex. Our reactors
make their own construction visible by taking their mutex, or storing an
atomic, in the constructor. Interceptor calls made inside the uninstrumented libraries are not
reported at all (TSAN_OPTIONS ignore_noninstrumented_modules=1, set by the
tsan test preset).

Usage: tsan_reports.py LOG_DIR   (the directory of TSAN_OPTIONS log_path)
Exit status: 0 when no report involves our code, 1 otherwise.
"""

import collections
import glob
import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ACCESS = re.compile(r"^  (Read|Write|Atomic read|Atomic write|Previous (read|write|atomic read|atomic write))")
FRAME = re.compile(r"^\s+#\d+ (.*)$")


THEIR_LIBRARIES = ("libgrpc", "libgpr", "libupb", "libprotobuf", "libabsl", "libre2", "libcares",
                   "libaddress_sorting", "libssl", "libcrypto")
THEIR_NAMESPACES = ("grpc::", "grpc_core::", "grpc_event_engine::", "grpc_", "gpr_")
GLUE_NAMESPACES = ("std::", "__gnu_cxx::", "absl::", "boost::", "google::protobuf::", "fanout::v1::")


def qualified_name(frame):
    """The function a frame names, without return type, templates and arguments."""
    text = frame.split(" /")[0].split(" <null>")[0]
    out, depth = [], 0
    for ch in text:
        if ch == "<":
            depth += 1
        elif ch == ">":
            depth -= 1
        elif depth == 0:
            if ch == "(" and out and not "".join(out).endswith("operator"):
                break
            out.append(ch)
    return "".join(out).strip().split(" ")[-1]


def made_by(stack):
    """'ours', 'theirs' or 'unknown': the owner of the innermost frame that is
    not glue."""
    for frame in stack:
        if "libtsan" in frame:
            continue
        m = re.search(r" (/\S+?):\d+", frame)
        path = m.group(1) if m else ""
        if path.startswith(ROOT + "/build/"):
            continue  # generated code (protos): glue
        if path.startswith(ROOT + "/"):
            return "ours"
        if path.startswith(("/usr/include/grpc/", "/usr/include/grpcpp/")):
            return "theirs"
        if path.startswith("/usr/include/"):
            continue  # the C++ library, Boost, abseil, protobuf headers
        name = qualified_name(frame)
        if name.startswith("fanout::") and not name.startswith("fanout::v1::"):
            return "ours"
        if name.startswith(THEIR_NAMESPACES):
            return "theirs"
        lib = re.search(r"\((lib[\w+-]+)\.so", frame)
        if lib and lib.group(1).startswith(THEIR_LIBRARIES):
            return "theirs"
    return "unknown"


MESSAGE_CTOR = re.compile(r"fanout::v1::(\w+)::(SharedCtor|\1)\(")


def constructs_message(stack):
    """True when the access is a generated message's constructor at work."""
    return any(MESSAGE_CTOR.search(f) for f in stack[:12])


def fills_read_message(stack):
    """True when gRPC is writing a received request into a message given to
    StartRead."""
    return any("grpc::SerializationTraits<" in f and "::Deserialize(" in f for f in stack[:12])


BIND_CALL = re.compile(r"grpc::Server\w*Reactor\b.*?::InternalBind\w*\(")


def finishes_backlog(stack):
    """True when gRPC is carrying out, as it binds a reactor, a Finish (or a
    write) that our code asked for before the reactor was bound."""
    return any(BIND_CALL.search(f) for f in stack)


def reports(log_dir):
    for path in sorted(glob.glob(os.path.join(log_dir, "*"))):
        with open(path, errors="replace") as f:
            text = f.read()
        for block in text.split("==================\n"):
            if "WARNING: ThreadSanitizer" in block:
                yield path, block


def access_stacks(block):
    stacks, current = [], None
    for line in block.splitlines():
        if ACCESS.match(line):
            current = []
            stacks.append(current)
        elif line.startswith("  ") and not line.startswith("    "):
            current = None  # Location, Mutex, Thread sections are not accesses
        elif current is not None:
            m = FRAME.match(line)
            if m:
                current.append(m.group(1))
    return stacks


def first_library_frame(stack):
    for frame in stack:
        if "libtsan" in frame:
            continue
        name = re.sub(r" (/usr/include/\S+|\(\S+\+0x[0-9a-f]+\)|<null>).*$", "", frame)
        return name[:100]
    return "?"


def main():
    if len(sys.argv) != 2:
        print(__doc__)
        return 2
    ours, theirs = [], collections.Counter()
    for path, block in reports(sys.argv[1]):
        stacks = access_stacks(block)
        owners = [made_by(s) for s in stacks]
        handed_over = owners.count("ours") == 1 and "theirs" in owners and (
            constructs_message(stacks[owners.index("ours")]) or
            fills_read_message(stacks[owners.index("theirs")]) or
            finishes_backlog(stacks[owners.index("theirs")]))
        if "ours" in owners and not handed_over:
            ours.append((path, block))
        else:
            kind = re.search(r"WARNING: ThreadSanitizer: ([^(]+)", block).group(1).strip()
            theirs[(kind, " / ".join(first_library_frame(s) for s in stacks))] += 1
    total = sum(theirs.values())
    print(f"tsan_reports: {total} report(s) entirely inside gRPC (its synchronization is "
          f"invisible to TSan), {len(ours)} involving fanout's code")
    for (kind, where), n in theirs.most_common(12):
        print(f"  {n:5d}  {kind}: {where}")
    for path, block in ours:
        print(f"\n--- {path}\n{block}")
    return 1 if ours else 0


if __name__ == "__main__":
    sys.exit(main())
