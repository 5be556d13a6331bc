"""Two "hosts" on one machine for multi-host Horovod tests: one network namespace per rank,
joined by a veth pair, Gloo rendezvous served from namespace 0 (no ssh, no horovodrun).

    with two_hosts() as hosts:
        results = run_ranks(hosts, [sys.executable, "main.py", ...], env={...}, cwd=ROOT)
    for returncode, output in results: ...

Needs root and iproute2 (`netns_unavailable_reason()` says why not, for pytest.skip).
"""
import contextlib
import ctypes
import itertools
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass

_counter = itertools.count()
_prctl = ctypes.CDLL(None).prctl  # looked up here: the forked child only calls it
# The server horovodrun --gloo starts (horovod.runner.gloo_run.launch_gloo), on its own.
_RENDEZVOUS = """import sys, threading
from horovod.runner.http.http_server import RendezvousServer
from horovod.runner.common.util.hosts import parse_hosts, get_host_assignments
server = RendezvousServer(verbose=0)
port = server.start()  # all addresses of the namespace, a free port
server.init(get_host_assignments(parse_hosts(sys.argv[1]), int(sys.argv[2])))
print(port, flush=True)
threading.Event().wait()  # serve until killed
"""


@dataclass(frozen=True)
class Hosts:
    """namespaces[r], addresses[r] and interfaces[r] belong to rank r."""
    namespaces: tuple
    addresses: tuple
    interfaces: tuple


def _ip(*args, check=True):
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check)


def netns_unavailable_reason():
    """None if this process can create network namespaces joined by veths, else why not."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    if shutil.which("ip") is None:
        return "`ip` (iproute2) is not installed"
    name = f"probe{os.getpid()}x{next(_counter)}"
    done = _ip("netns", "add", name, check=False)
    if done.returncode != 0:
        return f"`ip netns add` failed: {done.stderr.strip()}"
    try:
        done = _ip("-n", name, "link", "add", "p0", "type", "veth", "peer", "name", "p1", check=False)
        return f"cannot create a veth pair: {done.stderr.strip()}" if done.returncode else None
    finally:
        _ip("netns", "del", name, check=False)


@contextlib.contextmanager
def two_hosts(prefix="fdt"):
    """Yields Hosts: fresh namespaces <prefix><pid>x<n>a|b, veth0 10.213.N.1/24 <-> veth1 10.213.N.2/24.

    Workaround for Horovod 0.28.1, whose global process set ignores HOROVOD_GLOO_IFACE and uses
    the address the machine's hostname resolves to: /etc/netns/<ns>/hosts (which `ip netns exec`
    bind-mounts over /etc/hosts) maps the hostname to the namespace's own address.
    Teardown kills whatever still runs inside, deletes the namespaces (so the veths) and folders."""
    n = next(_counter)
    base, subnet = f"{prefix}{os.getpid()}x{n}", f"10.213.{(os.getpid() + n) % 254 + 1}"
    hosts = Hosts((base + "a", base + "b"), (subnet + ".1", subnet + ".2"), ("veth0", "veth1"))
    created_etc_netns = not os.path.isdir("/etc/netns")
    try:
        for ns in hosts.namespaces:
            _ip("netns", "add", ns)
            _ip("-n", ns, "link", "set", "lo", "up")
        (ns0, ns1), (if0, if1) = hosts.namespaces, hosts.interfaces
        _ip("link", "add", if0, "netns", ns0, "type", "veth", "peer", "name", if1, "netns", ns1)
        for ns, address, iface in zip(hosts.namespaces, hosts.addresses, hosts.interfaces):
            _ip("-n", ns, "addr", "add", address + "/24", "dev", iface)
            _ip("-n", ns, "link", "set", iface, "up")
            os.makedirs(f"/etc/netns/{ns}", exist_ok=True)
            with open(f"/etc/netns/{ns}/hosts", "w") as f:
                f.write(f"127.0.0.1 localhost\n::1 localhost ip6-localhost ip6-loopback\n"
                        f"{address} {socket.gethostname()}\n")
        yield hosts
    finally:
        for ns in hosts.namespaces:
            for pid in _ip("netns", "pids", ns, check=False).stdout.split():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(pid), signal.SIGKILL)
            _ip("netns", "del", ns, check=False)
            shutil.rmtree(f"/etc/netns/{ns}", ignore_errors=True)
        if created_etc_netns:
            with contextlib.suppress(OSError):
                os.rmdir("/etc/netns")


def established_peers(ns):
    """Remote addresses (no port) of the ESTABLISHED TCP connections inside namespace `ns`."""
    out = subprocess.run(["ip", "netns", "exec", ns, "ss", "-Htn", "state", "established"],
                         capture_output=True, text=True, check=True).stdout
    return [line.split()[-1].rsplit(":", 1)[0].strip("[]") for line in out.splitlines() if line.strip()]


def _spawn(ns, command, **kwargs):
    """Popen in namespace `ns`, in its own session (killpg reaches its children), SIGKILLed if we die."""
    return subprocess.Popen(["ip", "netns", "exec", ns, *command], start_new_session=True,
                            preexec_fn=lambda: _prctl(1, signal.SIGKILL), **kwargs)  # PR_SET_PDEATHSIG


def _signal(proc, sig):
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)


def _read(log):  # pread: leaves the file offset, which a still-running child shares, alone
    return os.pread(log.fileno(), os.fstat(log.fileno()).st_size, 0).decode(errors="replace")


def run_ranks(hosts, command, env=None, cwd=None, timeout=600, grace=5):
    """Run `command` (a list) as rank r of 2 in hosts.namespaces[r]; returns [(returncode, output)]
    with stdout and stderr combined. `env` is added to os.environ and the HOROVOD_* variables.

    Like horovodrun, the first rank to exit non-zero takes the other down (SIGTERM, then SIGKILL
    after `grace` seconds). After `timeout` seconds everything is killed and TimeoutError raised."""
    deadline = time.monotonic() + timeout
    ranks, logs = [], [tempfile.TemporaryFile() for _ in range(3)]  # rank 0, rank 1, server
    server = _spawn(hosts.namespaces[0], [sys.executable, "-c", _RENDEZVOUS, ",".join(
        f"{ns}:1" for ns in hosts.namespaces), "2"], stdout=subprocess.PIPE, stderr=logs[2], text=True)
    try:
        ready = select.select([server.stdout], [], [], min(timeout, 120))[0]
        port = server.stdout.readline().strip() if ready else ""
        if not port.isdigit():
            raise RuntimeError(f"the rendezvous server did not start:\n{_read(logs[2])[-3000:]}")
        for rank, (ns, iface) in enumerate(zip(hosts.namespaces, hosts.interfaces)):
            rank_env = dict(os.environ, PYTHONUNBUFFERED="1", HOROVOD_CONTROLLER="gloo",
                            HOROVOD_CPU_OPERATIONS="gloo", HOROVOD_GLOO_IFACE=iface,
                            HOROVOD_GLOO_RENDEZVOUS_ADDR=hosts.addresses[0],
                            HOROVOD_GLOO_RENDEZVOUS_PORT=port, HOROVOD_HOSTNAME=ns,
                            HOROVOD_RANK=str(rank), HOROVOD_SIZE="2", HOROVOD_LOCAL_RANK="0",
                            HOROVOD_LOCAL_SIZE="1", HOROVOD_CROSS_RANK=str(rank), HOROVOD_CROSS_SIZE="2")
            rank_env.update(env or {})
            ranks.append(_spawn(ns, command, env=rank_env, cwd=cwd, stdout=logs[rank], stderr=subprocess.STDOUT))
        kill_at = None
        while any(p.poll() is None for p in ranks):
            if time.monotonic() > deadline:
                raise TimeoutError(f"ranks still running after {timeout}s:\n" + "\n".join(
                    f"--- rank {r} ---\n{_read(log)[-3000:]}" for r, log in enumerate(logs[:2])))
            if kill_at is None and any(p.poll() not in (None, 0) for p in ranks):
                kill_at = time.monotonic() + grace  # a rank failed: stop the other one
                for p in ranks:
                    _signal(p, signal.SIGTERM)
            if kill_at is not None and time.monotonic() > kill_at:
                for p in ranks:
                    _signal(p, signal.SIGKILL)
            time.sleep(0.05)
        return [(p.returncode, _read(log)) for p, log in zip(ranks, logs)]
    finally:
        for p in ranks + [server]:
            _signal(p, signal.SIGKILL)
            p.wait()
        server.stdout.close()
        for log in logs:
            log.close()
