"""What can be checked of deploy/ on a machine with no container engine and no
Kubernetes: the files against the fanoutd they deploy.

    /usr/bin/python3 tests/deploy/deploy_test.py files FANOUTD
    /usr/bin/python3 tests/deploy/deploy_test.py systemd FANOUTD

`files`: every flag that the Dockerfile, the unit, the env example and the
manifests pass (as --flag or FANOUT_FLAG) is one of `fanoutd --help`, and a
FANOUT_ variable one main.cc reads; the ports agree with the listen flags; the
timeouts and the open-files limit with the drain and connection flags; the
configurations they pass start a real fanoutd; deploy/healthcheck.sh tells 200
from 503 and from nothing; the runtime image installs exactly the packages
`ldd fanoutd` maps to; yamllint and shellcheck pass; `make install` installs.

`systemd`: `systemd-analyze verify` of the unit `make install` writes (its
ExecStart names the installed copy of FANOUTD), and `systemd-analyze security`
rates it at most 2.0. Exits 77 (ctest: Skipped) when systemd-analyze cannot
verify even a trivial unit here, with the reason.

Prints `ok NAME`, `FAIL NAME: DETAIL` or `skip NAME: REASON` per check and
`N passed, M failed, K skipped` last.
"""

import glob
import http.server
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading

import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "e2e"))
from e2e_support import Fanoutd, Fatal  # noqa: E402

ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))
DEPLOY = os.path.join(ROOT, "deploy")
DOCKERFILE = os.path.join(DEPLOY, "Dockerfile")
UNIT = os.path.join(DEPLOY, "systemd", "fanoutd.service")
ENV_EXAMPLE = os.path.join(DEPLOY, "systemd", "fanoutd.env")
HEALTHCHECK = os.path.join(DEPLOY, "healthcheck.sh")
K8S = os.path.join(DEPLOY, "k8s")
COMPOSE = os.path.join(DEPLOY, "compose")
SKIP = 77


class Checks:
    def __init__(self):
        self.passed = self.failed = self.skipped = 0

    def check(self, name, ok, detail=""):
        if ok:
            self.passed += 1
            print(f"ok   {name}", flush=True)
        else:
            self.failed += 1
            print(f"FAIL {name}" + (f": {detail}" if detail else ""), flush=True)
        return ok

    def skip(self, name, reason):
        self.skipped += 1
        print(f"skip {name}: {reason}", flush=True)

    def summary(self):
        print(f"{self.passed} passed, {self.failed} failed, {self.skipped} skipped", flush=True)
        return 1 if self.failed else 0


# --- what fanoutd says about itself ----------------------------------------------

def help_flags(fanoutd):
    """{flag: default} from `fanoutd --help` (which exits 1, as abseil's does)."""
    out = subprocess.run([fanoutd, "--help"], capture_output=True, text=True, timeout=30)
    text = out.stdout + out.stderr
    flags = {}
    # One entry per flag: "--name (description); default: value;", wrapped.
    for entry in re.split(r"\n(?=    --)", text):
        m = re.match(r"\s*--(\w+) \(.*\);\s+default: (.*?);", entry, re.S)
        if m:
            flags[m.group(1)] = m.group(2).strip('"')
    if len(flags) < 10:
        raise Fatal(f"could not read the flags of `{fanoutd} --help`:\n{text}")
    return flags


def environment_flags():
    """The flags main.cc's WithEnvironmentFlags reads from FANOUT_<FLAG>."""
    source = open(os.path.join(ROOT, "service", "main.cc")).read()
    m = re.search(r"WithEnvironmentFlags\(.*?kNames\[\] = \{(.*?)\};", source, re.S)
    if not m:
        raise Fatal("no kNames list in WithEnvironmentFlags (service/main.cc)")
    return set(re.findall(r'"(\w+)"', m.group(1)))


def duration_seconds(text):
    """An absl duration ("10s", "1m30s", "500ms") in seconds."""
    units = {"h": 3600, "m": 60, "s": 1, "ms": 1e-3, "us": 1e-6, "ns": 1e-9}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|us|ns|h|m|s)", text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ValueError(f"not a duration: {text!r}")
    return sum(float(n) * units[u] for n, u in parts)


def port_of(address):
    return int(address.rsplit(":", 1)[1])


def host_of(address):
    return address.rsplit(":", 1)[0]


# --- what the deploy files pass ----------------------------------------------------

def dockerfile_instructions(path):
    """[(INSTRUCTION, arguments)], continuation lines joined, comments dropped."""
    out, current = [], ""
    for line in open(path).read().splitlines():
        if not current and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.lstrip().startswith("#"):  # a comment inside a continued instruction
            continue
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        current += line
        word, _, rest = current.strip().partition(" ")
        out.append((word.upper(), rest.strip()))
        current = ""
    return out


def env_assignments(text):
    """{NAME: value} of an ENV instruction's NAME=value pairs."""
    return dict(re.findall(r'(\w+)=("[^"]*"|\S+)', text))


class Passed:
    """The flags one deploy file gives fanoutd: arguments and FANOUT_ variables."""

    def __init__(self, where):
        self.where = where
        self.args = []     # "--flag=value" or "--flag"
        self.env = {}      # "FANOUT_FLAG": value (None: set at run time)

    def flag_values(self):
        """{flag: value} as fanoutd would see them (arguments win)."""
        values = {name[len("FANOUT_"):].lower(): v for name, v in self.env.items()}
        for a in self.args:
            name, _, value = a[2:].partition("=")
            values[name] = value
        return values


def dockerfile_passed():
    p = Passed("deploy/Dockerfile")
    stages = [[]]
    for word, rest in dockerfile_instructions(DOCKERFILE):
        if word == "FROM":
            stages.append([])
        stages[-1].append((word, rest))
    for word, rest in stages[-1]:  # the runtime stage
        if word == "ENV":
            p.env.update({k: v.strip('"') for k, v in env_assignments(rest).items()
                          if k.startswith("FANOUT_")})
        elif word in ("ENTRYPOINT", "CMD"):
            argv = json.loads(rest)
            p.args += [a for a in argv if a.startswith("--")]
    return p


def unit_directives(path):
    """[(section, key, value)] of a unit file."""
    out, section = [], ""
    for line in open(path).read().splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        out.append((section, key.strip(), value.strip()))
    return out


def unit_passed():
    p = Passed("deploy/systemd/fanoutd.service")
    for _, key, value in unit_directives(UNIT):
        if key == "ExecStart":
            p.args += [a for a in value.split()[1:] if a.startswith("--")]
        elif key == "Environment":
            for name, v in re.findall(r"(FANOUT_\w+)=(\S+)", value):
                p.env[name] = v
    return p


def env_example_passed():
    """Every FANOUT_X=value line of the example, commented out or not."""
    p = Passed("deploy/systemd/fanoutd.env")
    for line in open(ENV_EXAMPLE).read().splitlines():
        m = re.match(r"^#?(FANOUT_\w+)=(.*)$", line)
        if m:
            p.env[m.group(1)] = m.group(2)
        elif line.strip() and not line.startswith("#"):
            p.env.setdefault("__bad_lines__", "")
            p.env["__bad_lines__"] += line + "\n"
    return p


def k8s_documents():
    docs = []
    for path in sorted(glob.glob(os.path.join(K8S, "*.yaml"))):
        for doc in yaml.safe_load_all(open(path)):
            if doc:
                docs.append((os.path.relpath(path, ROOT), doc))
    return docs


def k8s_of_kind(docs, kind):
    return [d for _, d in docs if d.get("kind") == kind]


def k8s_container(deployment):
    containers = deployment["spec"]["template"]["spec"]["containers"]
    return next(c for c in containers if c["name"] == "fanoutd")


def k8s_passed(container):
    p = Passed("deploy/k8s/deployment.yaml")
    p.args += [a for a in container.get("command", [])[1:] + container.get("args", [])
               if a.startswith("--")]
    for e in container.get("env", []):
        if e["name"].startswith("FANOUT_"):
            p.env[e["name"]] = e.get("value")
    return p


# --- checks ---------------------------------------------------------------------------

def check_flags(c, passed, flags, env_flags):
    bad = passed.env.pop("__bad_lines__", None)
    if bad is not None:
        c.check(f"{passed.where}: only FANOUT_X=value and comment lines", False, bad)
    for a in passed.args:
        name = a[2:].partition("=")[0]
        c.check(f"{passed.where}: --{name} is a fanoutd flag", name in flags,
                "not in `fanoutd --help`")
    for var in passed.env:
        name = var[len("FANOUT_"):].lower()
        c.check(f"{passed.where}: {var} names --{name}", name in flags,
                "not in `fanoutd --help`")
        c.check(f"{passed.where}: fanoutd reads {var}", name in env_flags,
                "not in WithEnvironmentFlags' kNames (service/main.cc)")


def check_mentions(c, flags):
    """Flags named in the deploy files' comments exist too: `--snake_case` words
    (tools' own options use hyphens)."""
    files = [DOCKERFILE, UNIT, ENV_EXAMPLE, HEALTHCHECK] + sorted(glob.glob(os.path.join(K8S, "*")))
    for path in files:
        named = set(re.findall(r"--([a-z0-9]+(?:_[a-z0-9]+)+)", open(path).read()))
        unknown = sorted(n for n in named if n not in flags)
        c.check(f"{os.path.relpath(path, ROOT)}: the flags it names exist", not unknown,
                f"not fanoutd flags: {unknown}")


def check_dockerfile(c, flags, docker):
    values = docker.flag_values()
    instructions = dockerfile_instructions(DOCKERFILE)
    froms = [rest for word, rest in instructions if word == "FROM"]
    c.check("Dockerfile: builds on bookworm, runs on bookworm-slim",
            len(froms) >= 2 and froms[0].startswith("debian:bookworm ")
            and froms[-1] == "debian:bookworm-slim", f"FROM lines {froms}")
    runtime = instructions[max(i for i, (w, _) in enumerate(instructions) if w == "FROM"):]
    exposed = {int(p.split("/")[0]) for w, r in runtime if w == "EXPOSE" for p in r.split()}
    listen = {k: values.get(k, flags[k]) for k in ("ws_listen", "grpc_listen")}
    c.check("Dockerfile: EXPOSE is the ports of --ws_listen and --grpc_listen",
            exposed == {port_of(v) for v in listen.values()}, f"EXPOSE {exposed}, {listen}")
    for k, v in listen.items():
        c.check(f"Dockerfile: --{k} binds every interface", host_of(v) in ("0.0.0.0", "[::]"), v)
    users = [r for w, r in runtime if w == "USER"]
    c.check("Dockerfile: runs as a numeric non-root user",
            bool(users) and re.fullmatch(r"[1-9]\d*(:\d+)?", users[-1]) is not None, f"USER {users}")
    words = [w for w, _ in runtime]
    c.check("Dockerfile: HEALTHCHECK, STOPSIGNAL SIGTERM, ENTRYPOINT fanoutd",
            "HEALTHCHECK" in words and ("STOPSIGNAL", "SIGTERM") in runtime
            and any(w == "ENTRYPOINT" and json.loads(r)[0].endswith("/fanoutd") for w, r in runtime))
    # COPY sources must exist and be in the build context (.dockerignore).
    ignored = [l.strip().rstrip("/") for l in open(os.path.join(ROOT, ".dockerignore"))
               if l.strip() and not l.startswith("#")]
    c.check(".dockerignore: leaves build/ and .git out", "build" in ignored and ".git" in ignored,
            f"{ignored}")
    for w, r in instructions:
        if w != "COPY" or r.startswith("--from"):
            continue
        for src in r.split()[:-1]:
            if src == ".":
                continue
            hit = [p for p in ignored if src == p or src.startswith(p.lstrip("*/") + "/")]
            c.check(f"Dockerfile: COPY {src} is in the build context",
                    os.path.exists(os.path.join(ROOT, src)) and not hit, f"ignored by {hit}")
    # HEALTHCHECK runs what was copied.
    copied = {r.split()[-1]: r.split()[0] for w, r in runtime if w == "COPY" and not r.startswith("--from")}
    hc = [r for w, r in runtime if w == "HEALTHCHECK"]
    hc_cmd = json.loads(hc[0].split(" CMD ", 1)[1]) if hc and " CMD [" in hc[0] else []
    c.check("Dockerfile: HEALTHCHECK runs deploy/healthcheck.sh",
            bool(hc_cmd) and copied.get(hc_cmd[0]) == "deploy/healthcheck.sh", f"{hc} / {copied}")


def check_runtime_packages(c, fanoutd):
    """The runtime stage installs the packages of fanoutd's shared libraries."""
    name = "Dockerfile: the runtime packages are those of `ldd fanoutd` | dpkg -S"
    try:
        release = open("/etc/debian_version").read().strip()
    except OSError:
        release = ""
    if not release.startswith("12") or not shutil.which("dpkg"):
        return c.skip(name, f"needs Debian 12 with dpkg (this is {release or 'not Debian'})")
    ldd = subprocess.run(["ldd", fanoutd], capture_output=True, text=True, timeout=30).stdout
    libraries = re.findall(r"=> (/\S+)", ldd)
    wanted, unowned = set(), []
    for lib in libraries:
        owner = None
        for path in (lib, os.path.realpath(lib)):
            r = subprocess.run(["dpkg", "-S", path], capture_output=True, text=True)
            if r.returncode == 0:
                owner = r.stdout.split(":")[0]
                break
        if owner is None:
            unowned.append(lib)
        else:
            wanted.add(owner)
    runtime = dockerfile_instructions(DOCKERFILE)
    runs = " ".join(r for w, r in runtime[max(i for i, (w, _) in enumerate(runtime) if w == "FROM"):]
                    if w == "RUN")
    m = re.search(r"apt-get install -y --no-install-recommends (.*?) &&", runs)
    listed = set(m.group(1).split()) if m else set()
    c.check(name, wanted == listed and not unowned,
            f"missing {sorted(wanted - listed)}, not needed {sorted(listed - wanted)}, "
            f"no package owns {unowned}")


def check_unit(c, flags, env_example):
    d = unit_directives(UNIT)
    service = {k: v for s, k, v in d if s == "Service"}
    values = {**{k: flags[k] for k in flags}, **{k: v for k, v in env_example.flag_values().items()}}
    try:
        drain = duration_seconds(values["drain_timeout"])
        stop = duration_seconds(service.get("TimeoutStopSec", "90s"))
    except ValueError as e:
        return c.check("unit: TimeoutStopSec and --drain_timeout are durations", False, str(e))
    c.check("unit: TimeoutStopSec is longer than --drain_timeout", stop > drain,
            f"TimeoutStopSec {stop}s, drain {drain}s")
    wanted = int(values["max_connections"]) + int(values["max_pending_handshakes"]) + 64
    nofile = service.get("LimitNOFILE", "")
    c.check("unit: LimitNOFILE holds --max_connections + --max_pending_handshakes + 64",
            nofile.isdigit() and int(nofile) >= wanted, f"LimitNOFILE={nofile}, needs {wanted}")
    c.check("unit: reload is SIGHUP", service.get("ExecReload", "").endswith("kill -HUP $MAINPID"),
            service.get("ExecReload"))
    c.check("unit: reads /etc/default/fanoutd",
            service.get("EnvironmentFile", "").lstrip("-") == "/etc/default/fanoutd")
    for key, value in [("DynamicUser", "yes"), ("ProtectSystem", "strict"),
                       ("NoNewPrivileges", "yes"), ("CapabilityBoundingSet", "")]:
        c.check(f"unit: {key}={value}", service.get(key) == value, f"{key}={service.get(key)}")
    c.check("unit: ExecStart is the path make install rewrites",
            service.get("ExecStart", "").split()[0] == "/usr/local/bin/fanoutd",
            service.get("ExecStart"))


def check_k8s(c, flags, docs, docker):
    deployments = k8s_of_kind(docs, "Deployment")
    if not c.check("k8s: one Deployment", len(deployments) == 1, f"{len(deployments)}"):
        return None
    dep = deployments[0]
    pod = dep["spec"]["template"]
    container = k8s_container(dep)
    passed = k8s_passed(container)
    values = passed.flag_values()
    listen = {k: values.get(k) or docker.flag_values().get(k) or flags[k]
              for k in ("ws_listen", "grpc_listen")}
    ws, grpc = port_of(listen["ws_listen"]), port_of(listen["grpc_listen"])
    for k, v in listen.items():
        c.check(f"k8s: --{k} binds every interface", host_of(v) in ("0.0.0.0", "[::]"), v)
    c.check("k8s: replicas 1 (more need the NATS cluster)", dep["spec"].get("replicas") == 1)
    ports = {p["name"]: p["containerPort"] for p in container.get("ports", [])}
    c.check("k8s: container ports are the listen ports", set(ports.values()) == {ws, grpc},
            f"{ports}, listen {listen}")

    def resolve(port):
        return ports.get(port, port)

    ready = container.get("readinessProbe", {}).get("httpGet", {})
    c.check("k8s: readiness is GET /healthz on the WebSocket port",
            ready.get("path") == "/healthz" and resolve(ready.get("port")) == ws, f"{ready}")
    live = container.get("livenessProbe", {}).get("grpc", {})
    c.check("k8s: liveness is gRPC health on the gRPC port", resolve(live.get("port")) == grpc,
            f"{live}")
    drain = duration_seconds(values.get("drain_timeout") or flags["drain_timeout"])
    grace = pod["spec"].get("terminationGracePeriodSeconds", 30)
    c.check("k8s: terminationGracePeriodSeconds is longer than --drain_timeout", grace > drain,
            f"{grace}s, drain {drain}s")
    sc = container.get("securityContext", {})
    psc = pod["spec"].get("securityContext", {})
    c.check("k8s: non-root, read-only root filesystem, no capabilities",
            (sc.get("runAsNonRoot") or psc.get("runAsNonRoot")) is True
            and sc.get("readOnlyRootFilesystem") is True
            and sc.get("allowPrivilegeEscalation") is False
            and sc.get("capabilities", {}).get("drop") == ["ALL"], f"{psc} {sc}")
    user = str(sc.get("runAsUser") or psc.get("runAsUser"))
    docker_user = [r for w, r in dockerfile_instructions(DOCKERFILE) if w == "USER"][-1]
    c.check("k8s: runAsUser is the image's USER", user == docker_user.split(":")[0],
            f"runAsUser {user}, USER {docker_user}")
    c.check("k8s: resources requested and limited",
            {"requests", "limits"} <= set(container.get("resources", {})))
    labels = pod["metadata"]["labels"]

    def selects(selector):
        return bool(selector) and all(labels.get(k) == v for k, v in selector.items())

    for svc in k8s_of_kind(docs, "Service"):
        c.check("k8s: the Service selects the pods", selects(svc["spec"].get("selector")))
        targets = {p["name"]: resolve(p.get("targetPort", p["port"])) for p in svc["spec"]["ports"]}
        c.check("k8s: the Service's ports reach ws and grpc", set(targets.values()) == {ws, grpc},
                f"{targets}")
    pdbs = k8s_of_kind(docs, "PodDisruptionBudget")
    c.check("k8s: a PodDisruptionBudget selects the pods",
            len(pdbs) == 1 and selects(pdbs[0]["spec"]["selector"].get("matchLabels")))
    c.check("k8s: a Service", len(k8s_of_kind(docs, "Service")) == 1)
    return passed


def run_config(c, fanoutd, name, passed, substitute=None):
    """Starts fanoutd with the variables and arguments a file passes (the listen
    addresses moved to port 0 on loopback by flags, which win), expects its
    ready line and a clean exit on SIGTERM."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FANOUT_")}
    for k, v in passed.env.items():
        v = (substitute or {}).get(k, v)
        if v is not None:
            env[k] = v
    args = [a for a in passed.args if not a.startswith(("--ws_listen", "--grpc_listen"))]
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(env)
    try:
        node = Fanoutd(fanoutd, f"deploy-{name}", extra_args=args)
        try:
            node.ready_line()
            node.stop()
            c.check(f"{passed.where}: fanoutd starts with what it passes and stops with 0",
                    node.proc.returncode == 0, f"exit {node.proc.returncode}: {node.stderr_text()}")
        except Fatal as e:
            c.check(f"{passed.where}: fanoutd starts with what it passes", False, str(e))
        finally:
            node.kill()
    finally:
        os.environ.clear()
        os.environ.update(saved)


def run_healthcheck(address, tls=False):
    env = {k: v for k, v in os.environ.items() if not k.startswith("FANOUT_")}
    env["FANOUT_WS_LISTEN"] = address
    if tls:
        env["FANOUT_TLS_CERT_FILE"] = "/nonexistent.crt"
    r = subprocess.run(["bash", HEALTHCHECK], env=env, capture_output=True, text=True, timeout=10)
    return r.returncode, (r.stdout + r.stderr).strip()


def check_healthcheck(c, fanoutd):
    node = Fanoutd(fanoutd, "deploy-healthcheck")
    try:
        ws = node.ready_line()["ws"]
        rc, out = run_healthcheck(ws)
        c.check("healthcheck.sh: healthy against a serving fanoutd", rc == 0, out)
        rc, out = run_healthcheck("0.0.0.0:" + ws.rsplit(":", 1)[1])
        c.check("healthcheck.sh: a wildcard address is checked on loopback", rc == 0, out)
    finally:
        node.stop()
    rc, out = run_healthcheck(ws)
    c.check("healthcheck.sh: unhealthy when nothing listens", rc != 0, out)

    class Draining(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(503 if self.path == "/healthz" else 404)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Draining)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        address = f"127.0.0.1:{server.server_address[1]}"
        rc, out = run_healthcheck(address)
        c.check("healthcheck.sh: unhealthy on 503 (draining)", rc != 0, out)
        rc, out = run_healthcheck(address, tls=True)
        c.check("healthcheck.sh: with TLS, says it checked the port only",
                rc == 0 and "TLS" in out, out)
    finally:
        server.shutdown()


def check_linters(c):
    yamls = sorted(glob.glob(os.path.join(DEPLOY, "**", "*.yaml"), recursive=True))
    if not shutil.which("yamllint"):
        c.check("yamllint", False, "not installed (deploy/install-deps.sh installs it)")
    else:
        r = subprocess.run(["yamllint", "--strict", "-d", "default", *yamls],
                           capture_output=True, text=True)
        c.check(f"yamllint --strict: {len(yamls)} files of deploy/", r.returncode == 0 and yamls,
                r.stdout + r.stderr)
    scripts = []
    for top in (DEPLOY, HERE):
        for dirpath, _, names in os.walk(top):
            for n in names:
                path = os.path.join(dirpath, n)
                with open(path, "rb") as f:
                    first = f.readline()
                if n.endswith(".sh") or re.match(rb"#!.*\b(ba)?sh\b", first):
                    scripts.append(path)
    if not shutil.which("shellcheck"):
        c.check("shellcheck", False, "not installed (deploy/install-deps.sh installs it)")
    else:
        r = subprocess.run(["shellcheck", *sorted(scripts)], capture_output=True, text=True)
        c.check(f"shellcheck: {len(scripts)} scripts of deploy/ and tests/deploy/",
                r.returncode == 0 and scripts, r.stdout + r.stderr)
    if shutil.which("kubectl"):
        r = subprocess.run(["kubectl", "kustomize", K8S], capture_output=True, text=True, timeout=60)
        kinds = re.findall(r"^kind: (\w+)", r.stdout, re.M)
        c.check("kubectl kustomize deploy/k8s: Deployment, Service, PodDisruptionBudget",
                r.returncode == 0 and sorted(kinds) == ["Deployment", "PodDisruptionBudget", "Service"],
                r.stderr or f"{kinds}")
    else:
        c.skip("kubectl kustomize deploy/k8s", "no kubectl (not a Debian package; optional)")


def check_compose(c, flags, env_flags):
    """deploy/compose: the fanout services' FANOUT_ variables are fanoutd's, the
    nats-server flags are nats-server's, and HAProxy accepts its configuration
    (tests/deploy/local_cluster_test.py runs that configuration in front of
    real nodes)."""
    compose = yaml.safe_load(open(os.path.join(COMPOSE, "compose.yaml")))
    services = compose["services"]
    fanout = {n: s for n, s in services.items() if n.startswith("fanout-")}
    nats = {n: s for n, s in services.items() if n.startswith("nats-")}
    c.check("compose: three fanout nodes, three NATS servers, HAProxy",
            len(fanout) == 3 and len(nats) == 3 and "haproxy" in services, sorted(services))
    for name, svc in sorted(fanout.items()):
        p = Passed(f"deploy/compose/compose.yaml {name}")
        p.env = {k: v for k, v in svc.get("environment", {}).items() if k.startswith("FANOUT_")}
        check_flags(c, p, flags, env_flags)
        urls = p.env.get("FANOUT_NATS", "").split(",")
        c.check(f"compose {name}: --nats names the three NATS servers",
                sorted(u.split("//")[1].split(":")[0] for u in urls if "//" in u) == sorted(nats),
                str(urls))
    ids = [s.get("environment", {}).get("FANOUT_NODE_ID") for s in fanout.values()]
    c.check("compose: every node has its own --node_id", len(set(ids)) == 3 and None not in ids,
            str(ids))
    help_text = subprocess.run(["nats-server", "--help"], capture_output=True,
                               text=True).stdout if shutil.which("nats-server") else ""
    known = set(re.findall(r"--([a-z_]+)", help_text))
    for name, svc in sorted(nats.items()):
        args = [a[2:].partition("=")[0] for a in svc.get("command", []) if a.startswith("--")]
        unknown = [a for a in args if a not in known]
        c.check(f"compose {name}: its flags are nats-server's", help_text and not unknown,
                f"unknown: {unknown}" if help_text else "nats-server not installed")
    if not shutil.which("haproxy"):
        c.check("haproxy -c deploy/compose/haproxy.cfg", False,
                "not installed (deploy/install-deps.sh installs it)")
    else:
        r = subprocess.run(["haproxy", "-c", "-f", os.path.join(COMPOSE, "haproxy.cfg")],
                           capture_output=True, text=True)
        c.check("haproxy -c deploy/compose/haproxy.cfg: valid", r.returncode == 0,
                r.stdout + r.stderr)


def make_install(fanoutd, root):
    """`make install` into root/usr and root/etc; returns (installed unit, output)."""
    r = subprocess.run(["make", "-s", "-C", ROOT, "install", f"PREFIX={root}/usr",
                        f"SYSCONFDIR={root}/etc", f"FANOUTD={fanoutd}"],
                       capture_output=True, text=True, timeout=120)
    return os.path.join(root, "usr", "lib", "systemd", "system", "fanoutd.service"), r


def check_make_install(c, fanoutd):
    with tempfile.TemporaryDirectory() as root:
        unit, r = make_install(fanoutd, root)
        if not c.check("make install", r.returncode == 0, r.stdout + r.stderr):
            return
        binary = os.path.join(root, "usr", "bin", "fanoutd")
        c.check("make install: the binary, executable",
                os.access(binary, os.X_OK) and os.path.getsize(binary) == os.path.getsize(fanoutd))
        execstart = [v for s, k, v in unit_directives(unit) if k == "ExecStart"]
        c.check("make install: the unit's ExecStart names the installed binary",
                execstart == [binary], f"{execstart}")
        env = os.path.join(root, "etc", "default", "fanoutd")
        c.check("make install: /etc/default/fanoutd from the example",
                open(env).read() == open(ENV_EXAMPLE).read())
        with open(env, "w") as f:
            f.write("FANOUT_LOG_LEVEL=debug\n")
        _, r = make_install(fanoutd, root)
        c.check("make install again: keeps an existing /etc/default/fanoutd",
                r.returncode == 0 and open(env).read() == "FANOUT_LOG_LEVEL=debug\n",
                r.stdout + r.stderr)


def files(fanoutd):
    c = Checks()
    flags = help_flags(fanoutd)
    env_flags = environment_flags()
    c.check("main.cc reads every flag from FANOUT_<FLAG>", env_flags == set(flags),
            f"only in --help: {sorted(set(flags) - env_flags)}, "
            f"only in kNames: {sorted(env_flags - set(flags))}")
    docker, unit, example = dockerfile_passed(), unit_passed(), env_example_passed()
    docs = k8s_documents()
    for passed in (docker, unit, example):
        check_flags(c, passed, flags, env_flags)
    check_mentions(c, flags)
    check_dockerfile(c, flags, docker)
    check_runtime_packages(c, fanoutd)
    check_unit(c, flags, example)
    k8s = check_k8s(c, flags, docs, docker)
    if k8s:
        check_flags(c, k8s, flags, env_flags)
    # The values, not just the names: each configuration starts a node. The
    # example's file paths name files this machine does not have.
    run_config(c, fanoutd, "docker", docker)
    run_config(c, fanoutd, "unit", unit)
    example.env = {k: v for k, v in example.env.items() if not k.endswith("_FILE")}
    run_config(c, fanoutd, "env", example)
    if k8s:
        run_config(c, fanoutd, "k8s", k8s, {"FANOUT_NODE_ID": "deploy-k8s", "FANOUT_IO_THREADS": "2"})
    check_healthcheck(c, fanoutd)
    check_compose(c, flags, env_flags)
    check_linters(c)
    check_make_install(c, fanoutd)
    return c.summary()


def systemd(fanoutd):
    c = Checks()
    analyze = shutil.which("systemd-analyze")
    if not analyze:
        c.skip("systemd-analyze verify", "no systemd-analyze on this machine")
        c.summary()
        return SKIP
    with tempfile.TemporaryDirectory() as tmp:
        # A trivial unit first: if that does not verify, the tool is unusable here.
        control = os.path.join(tmp, "deploy-control.service")
        with open(control, "w") as f:
            f.write("[Unit]\nDescription=control\n[Service]\nExecStart=/bin/true\n")
        r = subprocess.run([analyze, "verify", "--man=no", control],
                           capture_output=True, text=True, timeout=60)
        if r.returncode != 0 or r.stdout.strip() or r.stderr.strip():
            c.skip("systemd-analyze verify",
                   f"it cannot verify even a trivial unit here: {(r.stdout + r.stderr).strip()}")
            c.summary()
            return SKIP
        unit, r = make_install(fanoutd, tmp)
        if not c.check("make install (the unit to verify)", r.returncode == 0, r.stdout + r.stderr):
            return c.summary()
        r = subprocess.run([analyze, "verify", "--man=no", unit],
                           capture_output=True, text=True, timeout=60)
        out = (r.stdout + r.stderr).strip()
        # verify exits 0 on unknown keys and unparsable values ("..., ignoring"):
        # anything it says is a failure.
        c.check("systemd-analyze verify fanoutd.service (ExecStart: the installed copy)",
                r.returncode == 0 and not out, out or f"exit {r.returncode}")
        r = subprocess.run([analyze, "security", "--offline=yes", "--threshold=20", unit],
                           capture_output=True, text=True, timeout=60)
        level = re.search(r"Overall exposure level for \S+: (\S+)", r.stdout)
        c.check("systemd-analyze security: exposure at most 2.0",
                r.returncode == 0 and level is not None,
                (level.group(1) if level else "") + "\n" + r.stdout[-2000:] + r.stderr)
        if level:
            print(f"     exposure {level.group(1)}", flush=True)
    return c.summary()


def main():
    if len(sys.argv) != 3 or sys.argv[1] not in ("files", "systemd"):
        sys.exit(f"usage: {sys.argv[0]} files|systemd FANOUTD")
    fanoutd = os.path.abspath(sys.argv[2])
    try:
        sys.exit(files(fanoutd) if sys.argv[1] == "files" else systemd(fanoutd))
    except Fatal as e:
        print(f"FAIL {e}", flush=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
