"""A real one-node SLURM cluster for the tests: munged, slurmctld and slurmd on localhost.

Nothing is installed here (tests/cluster/install_slurm.sh does that in `make test` / .ci/run).
The daemons run in the foreground as children of this process, with their own munge key and
socket, state, spool, logs and ports under one temporary directory; nothing under /etc is read
or written. `stop()` cancels what is still queued and ends every daemon it started, by PID.

    with SlurmCluster() as cluster:          # raises SlurmUnavailable (with the reason)
        subprocess.run(["sinfo"], env=cluster.env)

By hand: `python tests/cluster/slurm.py` starts one, prints the SLURM_CONF to export, and stops
it on Ctrl-C.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import string
import subprocess
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
BINARIES = ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "sinfo", "scontrol", "scancel")
PARTITION = "edntest"


class SlurmUnavailable(RuntimeError):
    """The cluster cannot run here; the message says why (for pytest.skip)."""


def why_unavailable() -> str | None:
    """Why a cluster cannot be started on this machine, or None if it can be tried."""
    missing = [b for b in BINARIES if shutil.which(b) is None]
    if missing:
        return (
            f"SLURM/munge binaries missing ({', '.join(missing)}); "
            "install them with tests/cluster/install_slurm.sh (as root)"
        )
    if os.geteuid() != 0:
        return "the one-node SLURM cluster needs root (slurmd runs jobs as their user)"
    return None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def node_hardware() -> tuple[str, int]:
    """('CPUs=.. Boards=.. SocketsPerBoard=.. CoresPerSocket=.. ThreadsPerCore=..', memory MB)
    as slurmd itself detects them (`slurmd -C`), so the node registers without being drained."""
    out = subprocess.run(["slurmd", "-C"], capture_output=True, text=True, timeout=30).stdout
    fields = dict(re.findall(r"(\w+)=(\S+)", out.splitlines()[0] if out else ""))
    keys = ("CPUs", "Boards", "SocketsPerBoard", "CoresPerSocket", "ThreadsPerCore")
    if all(k in fields for k in keys):
        hardware = " ".join(f"{k}={fields[k]}" for k in keys)
    else:
        hardware = f"CPUs={os.cpu_count() or 1}"
    real = int(fields.get("RealMemory", 0)) or (
        os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2**20
    )
    # a little under what slurmd measures: a node that reports less than configured is drained
    return hardware, max(256, int(real * 0.9))


def _die_with_parent() -> None:
    """In the child before exec: get SIGTERM when the process that started it dies (Linux), so
    a killed test run leaves no daemon behind."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _clean_environ() -> dict[str, str]:
    """os.environ without SLURM_* job variables (in case the tests themselves run in a job)."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "SBATCH_"))}


class SlurmCluster:
    def __init__(self, root: str | Path | None = None, partition: str = PARTITION):
        # unix socket paths are limited to ~107 bytes: keep the root short
        self._own_root = root is None
        self.root = Path(root or tempfile.mkdtemp(prefix="edn-slurm-"))
        self.partition = partition
        self.conf = self.root / "slurm.conf"
        self.munge_socket = self.root / "run" / "munge.sock"
        self.env = _clean_environ()
        self.env["SLURM_CONF"] = str(self.conf)
        self.procs: dict[str, subprocess.Popen] = {}
        self.start_seconds: float | None = None

    # -- configuration -------------------------------------------------------------------
    def write_config(self) -> None:
        for sub in ("run", "state", "spool", "log", "munge"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        self.root.chmod(0o755)
        key = self.root / "munge" / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o600)
        (self.root / "munge").chmod(0o700)
        ctld_port = _free_port()
        slurmd_port = _free_port()
        while slurmd_port == ctld_port:
            slurmd_port = _free_port()
        hardware, memory_mb = node_hardware()
        self.memory_mb = memory_mb
        text = string.Template((HERE / "slurm.conf.in").read_text()).substitute(
            root=self.root,
            ctld_port=ctld_port,
            slurmd_port=slurmd_port,
            munge_socket=self.munge_socket,
            hardware=hardware,
            memory_mb=memory_mb,
            partition=self.partition,
        )
        self.conf.write_text(text)
        # slurmd reads gres.conf from the directory of slurm.conf
        shutil.copy(HERE / "gres.conf", self.root / "gres.conf")
        self._write_srun_shim()

    def _write_srun_shim(self) -> None:
        """Clients find this cluster through $SLURM_CONF, not /etc/slurm/slurm.conf. Inside a
        job, snakemake-executor-plugin-slurm-jobstep (0.6.1) removes every SLURM_* variable but
        the job's identity before it calls `srun`, SLURM_CONF included, and srun then fails with
        "Could not establish a configuration source". A real cluster keeps its config at the
        standard path (or runs configless), so it never meets this; here an `srun` first on PATH
        puts SLURM_CONF back, and nothing outside this directory is touched."""
        real = shutil.which("srun", path=self.env.get("PATH"))
        if real is None:
            raise SlurmUnavailable("srun not found")
        bindir = self.root / "bin"
        bindir.mkdir(exist_ok=True)
        shim = bindir / "srun"
        shim.write_text(
            "#!/bin/sh\n"
            "# test cluster only: see tests/cluster/slurm.py (_write_srun_shim)\n"
            f"SLURM_CONF='{self.conf}' exec '{real}' \"$@\"\n"
        )
        shim.chmod(0o755)
        self.env["PATH"] = f"{bindir}{os.pathsep}{self.env.get('PATH', os.defpath)}"

    # -- daemons -------------------------------------------------------------------------
    def _spawn(self, name: str, argv: list[str]) -> None:
        out = open(self.root / "log" / f"{name}.out", "wb")
        self.procs[name] = subprocess.Popen(
            argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env=self.env, cwd=self.root, start_new_session=True, preexec_fn=_die_with_parent,
        )
        out.close()

    def _check_alive(self) -> None:
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                raise SlurmUnavailable(
                    f"{name} exited with status {proc.returncode}: {self.log_tail(name)}"
                )

    def log_tail(self, name: str, lines: int = 8) -> str:
        texts = []
        for path in (self.root / "log" / f"{name}.out", self.root / "log" / f"{name}.log"):
            if path.exists():
                texts += path.read_text(errors="replace").splitlines()[-lines:]
        return " | ".join(texts) or "(no log)"

    def run(self, *argv: str, check: bool = True, timeout: float = 30) -> str:
        """Run a SLURM client command against this cluster; its stdout."""
        res = subprocess.run(
            list(argv), env=self.env, capture_output=True, text=True, timeout=timeout
        )
        if check and res.returncode != 0:
            raise subprocess.CalledProcessError(res.returncode, argv, res.stdout, res.stderr)
        return res.stdout

    def node_state(self) -> str:
        try:
            res = subprocess.run(
                ["sinfo", "-h", "-N", "-o", "%T", "-p", self.partition],
                env=self.env, capture_output=True, text=True, timeout=10,
            )
        except subprocess.TimeoutExpired:
            return ""
        return res.stdout.strip() if res.returncode == 0 else ""

    def start(self, timeout: float = 90) -> "SlurmCluster":
        reason = why_unavailable()
        if reason:
            raise SlurmUnavailable(reason)
        t0 = time.monotonic()
        try:
            self.write_config()
            self._spawn("munged", [
                "munged", "--foreground", "--force",
                f"--socket={self.munge_socket}",
                f"--key-file={self.root / 'munge' / 'munge.key'}",
                f"--pid-file={self.root / 'run' / 'munged.pid'}",
                f"--seed-file={self.root / 'munge' / 'munged.seed'}",
                f"--log-file={self.root / 'log' / 'munged.log'}",
            ])
            self._wait(lambda: self.munge_socket.exists(), 20, "munged socket")
            self._spawn("slurmctld", ["slurmctld", "-D", "-i", "-f", str(self.conf)])
            self._spawn("slurmd", ["slurmd", "-D", "-N", "localhost", "-f", str(self.conf)])
            self._wait(lambda: self.node_state() == "idle", timeout - (time.monotonic() - t0),
                       "node idle in sinfo")
        except BaseException:
            self.stop()
            raise
        self.start_seconds = time.monotonic() - t0
        return self

    def _wait(self, ready, timeout: float, what: str) -> None:
        deadline = time.monotonic() + max(timeout, 1)
        while time.monotonic() < deadline:
            self._check_alive()
            if ready():
                return
            time.sleep(0.5)
        logs = "; ".join(f"{n}: {self.log_tail(n, 4)}" for n in self.procs)
        raise SlurmUnavailable(f"timed out waiting for {what}; {logs}")

    def stop(self) -> None:
        """Cancel remaining jobs, then end slurmd, slurmctld and munged (by PID, in that order)."""
        if "slurmctld" in self.procs and self.procs["slurmctld"].poll() is None:
            try:
                ids = self.run("squeue", "-h", "-o", "%i", check=False, timeout=10).split()
                if ids:
                    self.run("scancel", *ids, check=False, timeout=10)
                    deadline = time.monotonic() + 15
                    while time.monotonic() < deadline and self.run(
                        "squeue", "-h", "-t", "RUNNING,COMPLETING", "-o", "%i",
                        check=False, timeout=10,
                    ).split():
                        time.sleep(0.5)
            except (subprocess.SubprocessError, OSError):
                pass
        for name in ("slurmd", "slurmctld", "munged"):
            proc = self.procs.pop(name, None)
            if proc is None:
                continue
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=5)
        if self._own_root:
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> "SlurmCluster":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


if __name__ == "__main__":
    cluster = SlurmCluster()
    try:
        cluster.start()
    except SlurmUnavailable as e:
        raise SystemExit(f"cannot start SLURM: {e}")
    print(f"one-node SLURM up in {cluster.start_seconds:.1f} s")
    print(f"export SLURM_CONF={cluster.conf}   # partition {cluster.partition}; Ctrl-C stops")

    def _interrupt(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _interrupt)
    try:
        signal.pause()
    except KeyboardInterrupt:
        pass
    finally:
        cluster.stop()
