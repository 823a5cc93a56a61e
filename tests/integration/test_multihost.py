"""Training on several machines, for real: three network namespaces stand for three hosts on one LAN.

Host A runs roscore and the learner (``roslaunch op3_walk multihost.launch``, ROS_IP / ROS_MASTER_URI set as a
user sets them); roslaunch starts one controller on host B and one on host C over SSH (an sshd in each of their
namespaces, a throwaway key pair, host keys in known_hosts) through tools/env_loader.sh, the documented
``<machine>`` mechanism.  Training runs on both actors; then host C's cable is pulled (its switch port set down):
the learner keeps training on B, reports actor_1 lost on /diagnostics, loses nothing it stored, and takes actor_1
back once the cable is plugged in again.

Needs root (network namespaces) and openssh-server; skips, saying why, where ``ip netns add`` is refused.
"""
import getpass
import json
import os
import random
import shutil
import subprocess
import textwrap
import time

import pytest

from ros_harness import ROOT, Proc, wait_until

SSHD = "/usr/sbin/sshd"
STATE_TIMEOUT_S = 3.0     # the learner's state_timeout: a silent actor counts as lost after this
OUTAGE_S = 5.0            # how long host C stays cut off after it was reported lost


def ip(*args, check=True):
    result = subprocess.run(["ip"] + list(args), capture_output=True, text=True)
    if check and result.returncode != 0:
        raise RuntimeError("ip %s: %s" % (" ".join(args), result.stderr.strip()))
    return result


class Lan:
    """Namespaces a, b, c (hosts) and sw (a switch: one bridge), each host cabled to the switch by a veth pair."""

    def __init__(self):
        self.tag = "%06x" % random.getrandbits(24)
        self.subnet = "10.213.%d" % random.randint(1, 254)
        self.hosts = {h: "op3mh-%s-%s" % (self.tag, h) for h in "abc"}
        self.switch = "op3mh-%s-sw" % self.tag
        self.address = {h: "%s.%d" % (self.subnet, i + 1) for i, h in enumerate("abc")}
        self.made = []

    def port(self, host):
        return "s%s%s" % (self.tag, host)     # the switch side of host's cable

    def build(self):
        for ns in [self.switch] + list(self.hosts.values()):
            ip("netns", "add", ns)
            self.made.append(ns)
            ip("-n", ns, "link", "set", "lo", "up")
        ip("-n", self.switch, "link", "add", "br0", "type", "bridge")
        ip("-n", self.switch, "link", "set", "br0", "up")
        for host, ns in self.hosts.items():
            ip("link", "add", "h%s%s" % (self.tag, host), "netns", ns, "type", "veth",
               "peer", "name", self.port(host), "netns", self.switch)
            ip("-n", ns, "link", "set", "h%s%s" % (self.tag, host), "name", "eth0")
            ip("-n", ns, "addr", "add", self.address[host] + "/24", "dev", "eth0")
            ip("-n", ns, "link", "set", "eth0", "up")
            ip("-n", self.switch, "link", "set", self.port(host), "master", "br0")
            ip("-n", self.switch, "link", "set", self.port(host), "up")

    def cable(self, host, up):
        ip("-n", self.switch, "link", "set", self.port(host), "up" if up else "down")

    def pids(self, host):
        out = ip("netns", "pids", self.hosts[host], check=False).stdout
        return [int(p) for p in out.split()]

    def teardown(self):
        """Kill what still runs in the namespaces (all started by this test), then delete them."""
        for ns in self.made:
            for _ in range(3):
                pids = [int(p) for p in ip("netns", "pids", ns, check=False).stdout.split()]
                if not pids:
                    break
                for pid in pids:
                    try:
                        os.kill(pid, 9)
                    except OSError:
                        pass
                time.sleep(0.3)
            ip("netns", "del", ns, check=False)


def cmdline(pid):
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as fh:
            return fh.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


MONITOR = textwrap.dedent('''
    import json, sys, time
    import rosgraph, rospy
    from diagnostic_msgs.msg import DiagnosticArray
    while not rosgraph.is_master_online():
        time.sleep(0.2)
    rospy.init_node("multihost_monitor", disable_signals=True)
    out = open(sys.argv[1], "a")
    def on(msg):
        rec = {"t": time.monotonic(), "status": {}}
        for st in msg.status:
            if st.name.startswith("op3_walk learner") or st.name.startswith("op3_walk actor"):
                rec["status"][st.name] = dict([(kv.key, kv.value) for kv in st.values],
                                              _level=st.level, _message=st.message)
        if rec["status"]:
            out.write(json.dumps(rec) + "\\n")
            out.flush()
    rospy.Subscriber("/diagnostics", DiagnosticArray, on, queue_size=50)
    rospy.spin()
''')


class Monitor:
    def __init__(self, path):
        self.path = path
        self.records = []
        self._offset = 0

    def poll(self):
        if os.path.exists(self.path):
            with open(self.path) as fh:
                fh.seek(self._offset)
                data = fh.read()
            complete = data[:data.rfind("\n") + 1]
            self._offset += len(complete)
            self.records += [json.loads(line) for line in complete.splitlines() if line.strip()]
        return self.records

    def learner(self):
        for rec in reversed(self.poll()):
            for name, st in rec["status"].items():
                if name.startswith("op3_walk learner"):
                    return st
        return None

    def actor(self, ns):
        for rec in reversed(self.poll()):
            st = rec["status"].get("op3_walk actor %s" % ns)
            if st is not None:
                return st
        return None

    def transitions(self, ns):
        st = self.actor(ns)
        return -1 if st is None else int(st["transitions"])


@pytest.fixture
def lan():
    if shutil.which("ip") is None:
        pytest.skip("iproute2 (`ip`) is not installed: cannot make network namespaces")
    probe = "op3mh-probe-%d" % os.getpid()
    result = ip("netns", "add", probe, check=False)
    if result.returncode != 0:
        pytest.skip("network namespaces are not permitted here (`ip netns add` failed: %s); the multi-host test "
                    "needs root or CAP_SYS_ADMIN + CAP_NET_ADMIN" % result.stderr.strip())
    ip("netns", "del", probe, check=False)
    if not os.access(SSHD, os.X_OK):
        pytest.fail("the multi-host test needs an SSH server (%s): apt-get install openssh-server" % SSHD)
    net = Lan()
    try:
        net.build()
        yield net
    finally:
        net.teardown()


def ssh_setup(tmp_path, lan):
    """A throwaway host key for the sshds and a client key for the user on host A (HOME=tmp_path/home), with
    known_hosts filled in as `ssh host_b` once would; one sshd config per controller host."""
    keys = tmp_path / "ssh"
    keys.mkdir()
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(keys / "host_key")], check=True)
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(home / ".ssh" / "id_ed25519")],
                   check=True)
    (keys / "authorized_keys").write_text((home / ".ssh" / "id_ed25519.pub").read_text())
    host_pub = " ".join((keys / "host_key.pub").read_text().split()[:2])
    (home / ".ssh" / "known_hosts").write_text("".join("%s %s\n" % (lan.address[h], host_pub) for h in "bc"))
    os.makedirs("/run/sshd", mode=0o755, exist_ok=True)   # sshd's privilege separation folder
    configs = {}
    for h in "bc":
        ros_home = tmp_path / ("ros_home_%s" % h)
        ros_home.mkdir()
        cfg = keys / ("sshd_%s.conf" % h)
        cfg.write_text(textwrap.dedent("""\
            ListenAddress {addr}
            Port 22
            HostKey {keys}/host_key
            PidFile {keys}/sshd_{h}.pid
            AuthorizedKeysFile {keys}/authorized_keys
            PermitRootLogin prohibit-password
            PasswordAuthentication no
            KbdInteractiveAuthentication no
            UsePAM no
            StrictModes no
            SetEnv ROS_HOME={ros_home}
            """.format(addr=lan.address[h], keys=keys, h=h, ros_home=ros_home)))
        configs[h] = str(cfg)
    return home, configs


def test_training_on_three_hosts_survives_a_pulled_cable(lan, tmp_path, small_agent_config):
    home, sshd_configs = ssh_setup(tmp_path, lan)
    procs = []

    def start(host, args, name, env=None):
        proc = Proc(["ip", "netns", "exec", lan.hosts[host]] + args, str(tmp_path / ("%s.log" % name)),
                    env or dict(os.environ))
        procs.append(proc)
        return proc

    # host A's shell, as a user sets it up (plus a private HOME holding the SSH key and known_hosts)
    env_a = {k: v for k, v in os.environ.items() if k not in ("ROS_HOSTNAME", "SSH_AUTH_SOCK", "ROSLAUNCH_SSH_UNKNOWN")}
    env_a.update(ROS_IP=lan.address["a"], ROS_MASTER_URI="http://%s:11311" % lan.address["a"], HOME=str(home),
                 ROS_HOME=str(tmp_path / "ros_home_a"), USER=getpass.getuser())
    learner_params = tmp_path / "learner.yaml"
    learner_params.write_text("state_timeout: %.1f\nconnect_timeout: 90.0\nreconnect_timeout: 60.0\n"
                              "diagnostics_rate_hz: 4.0\n" % STATE_TIMEOUT_S)
    monitor = Monitor(str(tmp_path / "diagnostics.jsonl"))
    (tmp_path / "monitor.py").write_text(MONITOR)
    try:
        for h in "bc":
            start(h, [SSHD, "-D", "-e", "-f", sshd_configs[h]], "sshd_%s" % h)
        for h in "bc":
            wait_until(lambda: ":22 " in subprocess.run(["ip", "netns", "exec", lan.hosts[h], "ss", "-ltn"],
                                                        capture_output=True, text=True).stdout, 15,
                       what="sshd on host %s" % h)
        launch = start("a", ["roslaunch", "op3_walk", "multihost.launch", "host_b:=%s" % lan.address["b"],
                             "host_c:=%s" % lan.address["c"], "user:=%s" % getpass.getuser(),
                             "env_loader:=%s" % os.path.join(ROOT, "tools", "env_loader.sh"),
                             "machine_timeout:=90", "agent_config:=%s" % small_agent_config,
                             "learner_params:=%s" % learner_params, "steps:=1000000", "progress:=false",
                             "tensorboard:=false", "checkpoint_every:=0", "out_dir:=%s" % (tmp_path / "out")],
                       "roslaunch", env_a)
        start("a", ["python", str(tmp_path / "monitor.py"), monitor.path], "monitor", env_a)

        def both_train():
            assert launch.popen.poll() is None, "roslaunch exited:\n" + launch.log()[-4000:]
            return monitor.transitions("actor_0") >= 40 and monitor.transitions("actor_1") >= 40
        wait_until(both_train, 150, interval=0.5, what="transitions from both actors")

        # the controllers really run on hosts B and C, started over SSH through the env-loader
        for h in "bc":
            assert any("controller_node" in cmdline(pid) for pid in lan.pids(h)), "no controller on host %s" % h
            assert not any("controller_node" in cmdline(pid) for pid in lan.pids("a"))
        log = launch.log()
        assert "creating ssh connection to %s:22" % lan.address["b"] in log, log[-3000:]
        assert "creating ssh connection to %s:22" % lan.address["c"] in log, log[-3000:]

        lan.cable("c", up=False)                           # host C (actor_1) drops off the network
        cut = time.monotonic()
        wait_until(lambda: (monitor.actor("actor_1") or {}).get("_level") == 2, STATE_TIMEOUT_S + 20,
                   interval=0.2, what="actor_1 reported lost on /diagnostics")
        lost_after = time.monotonic() - cut
        lost = monitor.actor("actor_1")
        assert lost["_message"].startswith("lost") and float(lost["last state age [s]"]) >= STATE_TIMEOUT_S
        learner = monitor.learner()
        assert learner["_level"] == 1 and "actor_1" in learner["_message"], learner
        stored_1 = int(lost["transitions"])
        alone_from, alone_since = monitor.transitions("actor_0"), time.monotonic()
        wait_until(lambda: (monitor.transitions("actor_0") >= alone_from + 60
                            and time.monotonic() - alone_since >= OUTAGE_S), 60, interval=0.2,
                   what="training on actor_0 alone")
        assert monitor.transitions("actor_1") == stored_1 and monitor.actor("actor_1")["_level"] == 2

        lan.cable("c", up=True)                            # and comes back
        wait_until(lambda: (monitor.actor("actor_1")["_level"] == 0
                            and monitor.transitions("actor_1") >= stored_1 + 20), 80, interval=0.2,
                   what="actor_1 taken back (status OK, new transitions)")
        assert launch.popen.poll() is None, launch.log()[-4000:]
        assert int(monitor.actor("actor_1")["reconnects"]) >= 1

        # nothing stored was ever lost: env steps and replay memory never went down
        learners = [st for rec in monitor.poll() for name, st in rec["status"].items()
                    if name.startswith("op3_walk learner")]
        steps = [int(st["env steps"]) for st in learners]
        memory = [int(st["replay memory"]) for st in learners]
        assert steps == sorted(steps) and memory == sorted(memory) and memory[-1] > memory[0]
        assert lost_after < STATE_TIMEOUT_S + 10

        assert launch.interrupt(timeout=60) == 0, launch.log()[-4000:]
    finally:
        for proc in reversed(procs):
            if proc.popen.poll() is None:
                try:
                    proc.interrupt(timeout=20)
                except AssertionError:
                    pass
            proc.kill()
