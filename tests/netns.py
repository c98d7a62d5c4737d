"""A remote PostgreSQL server in its own network namespace, with firewall faults on demand.

The namespace is joined to the host by a veth pair: the host end has ``.1``, the namespace
end ``.2`` of a /24 chosen per process (10.213.x.0/24), so parallel runs do not collide. The
server listens on the namespace address only; dblink on the host reaches it through the
veth, as it would reach another machine. Faults are iptables rules in a chain of the
namespace's own firewall (the host's firewall is never touched):

- ``blackhole()`` drops every packet to and from the server's port, established flows
  included, as a NAT or a dead link that forgets a flow without a word;
- ``reject()`` answers the server's port (or one client flow) with a TCP reset;
- ``heal()`` removes the faults.

The test process itself talks to the server over its Unix socket (a path, which network
namespaces do not separate), so it can inspect and clean up the server during a fault.

Only root can do this; ``unavailable()`` says why it cannot be done here, for a skip.
"""

import contextlib
import ipaddress
import os
import re
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field

from psycopg import sql
from servers import Binaries, LocalCluster, ServerError, process_exists

#: Every namespace this harness creates is named PREFIX + the creating process's pid.
PREFIX = "pgdbs_net_"
#: Host-side veth names: VETH_PREFIX + pid + "h" (the namespace end ends in "n").
VETH_PREFIX = "pgdbs"
#: The firewall chain (in the namespace) that holds the faults.
CHAIN = "PGDBS_FAULT"
_SUPERNET = "10.213"
_CMD_TIMEOUT = 30.0


def unavailable() -> str | None:
    """Why a network namespace cannot be set up here, or None when it can be tried."""
    if os.geteuid() != 0:
        return "network namespace tests need root (ip netns, iptables)"
    missing = [tool for tool in ("ip", "ss", "iptables", "runuser") if shutil.which(tool) is None]
    if missing:
        return f"network namespace tests need {', '.join(missing)} (not on PATH)"
    return None


def _run(*args: str, check: bool = True, timeout: float = _CMD_TIMEOUT) -> str:
    result = subprocess.run(
        list(args),
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    if check and result.returncode != 0:
        raise ServerError(f"{' '.join(args)} failed ({result.returncode}): {result.stderr.strip()}")
    return result.stdout


def namespaces() -> list[str]:
    return [line.split()[0] for line in _run("ip", "netns", "list").splitlines() if line.strip()]


def namespace_pids(name: str) -> list[int]:
    return [int(p) for p in _run("ip", "netns", "pids", name, check=False).split()]


def _kill_namespace_processes(name: str) -> None:
    """End what still runs in namespace ``name`` (a server of this harness), then wait."""
    pids = namespace_pids(name)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and any(process_exists(p) for p in pids):
            time.sleep(0.05)
        pids = [p for p in pids if process_exists(p)]
        if not pids:
            return


def _delete_namespace(name: str, host_if: str) -> None:
    _kill_namespace_processes(name)
    _run("ip", "link", "del", host_if, check=False)
    if name in namespaces():
        _run("ip", "netns", "del", name, check=False)
    # Deleting a namespace destroys its end of the veth, and so the pair, asynchronously.
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and link_exists(host_if):
        time.sleep(0.05)


def link_exists(name: str) -> bool:
    return os.path.exists(f"/sys/class/net/{name}")


def cleanup_stale() -> list[str]:
    """Delete namespaces and host veths this harness left behind in runs that crashed.

    Only names with this harness's prefix whose creating process no longer exists are
    touched. Returns the namespaces deleted.
    """
    removed = []
    for name in namespaces():
        match = re.fullmatch(re.escape(PREFIX) + r"(\d+)", name)
        if match and not process_exists(int(match[1])):
            _delete_namespace(name, f"{VETH_PREFIX}{match[1]}h")
            removed.append(name)
    for link in os.listdir("/sys/class/net"):
        match = re.fullmatch(re.escape(VETH_PREFIX) + r"(\d+)h", link)
        if match and not process_exists(int(match[1])):
            _run("ip", "link", "del", link, check=False)
    return removed


def _host_networks() -> list[ipaddress.IPv4Network]:
    """The host's IPv4 networks: of its addresses and of its routes other than the default."""
    networks = []
    for line in _run("ip", "-4", "-o", "addr", "show").splitlines():
        match = re.search(r"inet (\S+)", line)
        if match:
            networks.append(ipaddress.IPv4Interface(match[1]).network)
    for line in _run("ip", "-4", "-o", "route", "show").splitlines():
        first = line.split()[0] if line.strip() else "default"
        if first != "default":
            with contextlib.suppress(ValueError):
                networks.append(ipaddress.IPv4Network(first, strict=False))
    return networks


class NetNamespace:
    """A network namespace joined to the host by a veth pair; delete() removes both."""

    def __init__(self, pid: int | None = None) -> None:
        pid = os.getpid() if pid is None else pid
        self.name = f"{PREFIX}{pid}"
        self.host_if = f"{VETH_PREFIX}{pid}h"
        self.ns_if = f"{VETH_PREFIX}{pid}n"
        self._third = pid % 250 + 1
        self.host_ip = ""
        self.ns_ip = ""
        self.created = False

    def create(self) -> "NetNamespace":
        cleanup_stale()
        if self.name in namespaces():  # our pid, reused after a crashed run
            _delete_namespace(self.name, self.host_if)
        taken = _host_networks()
        for step in range(250):
            third = (self._third - 1 + step) % 250 + 1
            candidate = ipaddress.IPv4Network(f"{_SUPERNET}.{third}.0/24")
            if not any(candidate.overlaps(network) for network in taken):
                break
        else:
            raise ServerError(f"no free /24 in {_SUPERNET}.0.0/16 for a test namespace")
        self.host_ip = f"{_SUPERNET}.{third}.1"
        self.ns_ip = f"{_SUPERNET}.{third}.2"
        _run("ip", "netns", "add", self.name)
        self.created = True
        try:
            _run("ip", "link", "add", self.host_if, "type", "veth", "peer", "name", self.ns_if)
            _run("ip", "link", "set", self.ns_if, "netns", self.name)
            _run("ip", "addr", "add", f"{self.host_ip}/24", "dev", self.host_if)
            _run("ip", "link", "set", self.host_if, "up")
            self.ip("addr", "add", f"{self.ns_ip}/24", "dev", self.ns_if)
            self.ip("link", "set", self.ns_if, "up")
            self.ip("link", "set", "lo", "up")
            # The faults live in their own chain, consulted first both ways.
            self.iptables("-N", CHAIN)
            self.iptables("-I", "INPUT", "1", "-j", CHAIN)
            self.iptables("-I", "OUTPUT", "1", "-j", CHAIN)
        except BaseException:
            self.delete()
            raise
        return self

    def ip(self, *args: str) -> str:
        return _run("ip", "-n", self.name, *args)

    def exec_args(self, *args: str) -> list[str]:
        """The command line that runs ``args`` inside the namespace."""
        return ["ip", "netns", "exec", self.name, *args]

    def iptables(self, *args: str) -> str:
        # -w: wait for the xtables lock rather than fail when another run holds it.
        return _run(*self.exec_args("iptables", "-w", "5", *args))

    def rules(self) -> str:
        return self.iptables("-S", CHAIN)

    def blackhole(self, port: int, client_port: int | None = None) -> None:
        """Drop every packet to and from ``port``, established flows too, or one client's flow.

        With ``client_port`` only that flow goes dark, as when a NAT forgets it: the server
        and new connections to it are fine.
        """
        to_server = [] if client_port is None else ["--sport", str(client_port)]
        from_server = [] if client_port is None else ["--dport", str(client_port)]
        self.iptables("-A", CHAIN, "-p", "tcp", *to_server, "--dport", str(port), "-j", "DROP")
        self.iptables("-A", CHAIN, "-p", "tcp", "--sport", str(port), *from_server, "-j", "DROP")

    def reject(self, port: int, client_port: int | None = None) -> None:
        """Answer packets to ``port`` with a TCP reset: all of them, or one client's flow."""
        flow = [] if client_port is None else ["--sport", str(client_port)]
        reset = ["-j", "REJECT", "--reject-with", "tcp-reset"]
        self.iptables("-A", CHAIN, "-p", "tcp", *flow, "--dport", str(port), *reset)

    def fault_packets(self) -> int:
        """Packets the fault rules have dropped or answered with a reset since they were added."""
        listing = self.iptables("-L", CHAIN, "-n", "-v", "-x")
        return sum(
            int(line.split()[0]) for line in listing.splitlines() if line.strip()[:1].isdigit()
        )

    def heal(self) -> None:
        self.iptables("-F", CHAIN)

    def delete(self) -> None:
        """Remove the namespace and its veth pair; safe to call twice."""
        if self.created:
            _delete_namespace(self.name, self.host_if)
            self.created = False


@dataclass
class NamespacedCluster(LocalCluster):
    """A LocalCluster whose server runs inside ``netns`` and listens on its address only.

    Programs run as ``ip netns exec NS runuser -u USER -- ...`` (a subprocess ``user=``
    would drop root before entering the namespace). Other servers reach it at
    ``conninfo()`` (the namespace address); this process uses its Unix socket.
    """

    netns: NetNamespace = field(default_factory=NetNamespace)

    def __post_init__(self) -> None:
        if not self.netns.created:
            raise ServerError("create the network namespace before the server that runs in it")
        if self.os_user is None:
            raise ServerError("a server in a network namespace needs root and an OS user")
        self.host = self.netns.ns_ip

    def _run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        assert self.os_user is not None
        return subprocess.run(
            self.netns.exec_args("runuser", "-u", self.os_user, "--", *args),
            check=False,
            capture_output=True,
            text=True,
            env=self.binaries.env(),
            cwd=self.base,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )

    def start(self, extra_conf: dict[str, str] | None = None) -> "NamespacedCluster":
        conf = {"listen_addresses": f"'{self.netns.ns_ip}'"} | (extra_conf or {})
        super().start(conf)
        # initdb's pg_hba.conf trusts loopback only; the host end of the veth is let in
        # and the server reloads (a signal: no connection needed).
        with (self.datadir / "pg_hba.conf").open("a") as hba:
            hba.write(f"host all all {self.netns.host_ip}/32 trust\n")
        if not self._pg_ctl("reload"):
            raise ServerError(f"{self.label} did not reload; its log:\n{self.log_since(0)}")
        return self

    def client_conninfo(self, dbname: str = "postgres") -> str:
        # A Unix socket is a path: it works from the host however the network is faulted.
        return self.conninfo(dbname, host=str(self.base))

    def client_ports(self, dbname: str) -> list[int]:
        """TCP ports of the clients connected to ``dbname`` over the network."""
        rows = self.execute(
            sql.SQL(
                "SELECT client_port FROM pg_stat_activity WHERE backend_type = 'client backend' "
                "AND client_port > 0 AND datname = {}"
            ).format(sql.Literal(dbname))
        )
        return [int(r[0]) for r in rows]


def start_in_namespace(binaries: Binaries, label: str = "netns-remote") -> NamespacedCluster:
    """Create a namespace and start a server in it; on failure nothing is left behind."""
    netns = NetNamespace().create()
    cluster: NamespacedCluster | None = None
    try:
        cluster = NamespacedCluster(binaries, label=label, netns=netns)
        return cluster.start()
    except BaseException:
        if cluster is not None:
            cluster.stop()
        netns.delete()
        raise


def stop_in_namespace(cluster: NamespacedCluster) -> None:
    """Stop the server and delete its namespace, whatever state either is in."""
    try:
        cluster.stop()
    finally:
        cluster.netns.delete()
