"""A thin transport over the system OpenSSH client.

edgeq talks to boards with the ``ssh`` program the user already has, so their
``~/.ssh/config``, keys, agent, ``ProxyJump`` and ``known_hosts`` behave exactly
as in their terminal. One connection per board is opened as a control master
(``ControlMaster``/``ControlPath`` in a private temporary folder), and every later
step rides on it, so a deploy pays one handshake per board, not one per step.
``BatchMode=yes`` makes sure nothing ever prompts: a missing key fails at once.
Every ``ssh`` runs in a session of its own, so a Ctrl-C in the terminal reaches only
edgeq, which then stops the boards' commands itself: an interrupt is never seen as
an ssh that died, that is, as a broken board.

Failures become :class:`~edgeq.errors.SSHError` (defined with the rest of the
tree in :mod:`edgeq.errors`, importable from here too) with a ``kind``
(``unreachable``, ``auth``, ``hostkey``, ``timeout``, ``remote``) and a message
that says what to fix.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Sequence

from edgeq.errors import InvalidArgumentError, SSHError

__all__ = ["RemoteResult", "SSHConnection", "SSHError", "SSHTarget", "parse_target"]


_TARGET_RE = re.compile(r"^(?:ssh://)?(?:(?P<user>[^@/\s]+)@)?(?P<host>\[[^\]]+\]|[^:@/\s]+)(?::(?P<port>\d+))?/?$")


def parse_target(text: str) -> tuple[str, int | None]:
    """Split ``user@host``, ``user@host:2222`` or ``ssh://user@host:2222`` into (destination, port).

    The destination is passed to ``ssh`` unchanged, so a ``Host`` alias from the
    user's ssh config works as well as a real host name.
    """
    m = _TARGET_RE.match(text.strip()) if isinstance(text, str) else None
    if not m:
        raise InvalidArgumentError("not an SSH destination", argument="to", received=text,
                                   fix="give user@host, user@host:PORT or a Host alias from ~/.ssh/config")
    host = m.group("host").strip("[]")
    dest = f"{m.group('user')}@{host}" if m.group("user") else host
    return dest, int(m.group("port")) if m.group("port") else None


@dataclass(frozen=True)
class SSHTarget:
    """Where and how to connect: what ``ssh`` needs on its command line.

    Attributes:
        destination: ``user@host`` or a ``Host`` alias.
        port: TCP port (``-p``); ``None`` lets ssh config decide.
        identity: private key file (``-i``, with ``IdentitiesOnly=yes``).
        ssh_config: an ssh_config file used instead of ``~/.ssh/config`` (``-F``).
        options: extra ``-o`` options, e.g. ``("ProxyJump=bastion",)``.
        connect_timeout: seconds to wait for the TCP connection and the handshake.
    """

    destination: str
    port: int | None = None
    identity: str | None = None
    ssh_config: str | None = None
    options: tuple[str, ...] = ()
    connect_timeout: float = 15.0

    def describe(self) -> str:
        """``user@host:port`` as a person would write it."""
        return f"{self.destination}:{self.port}" if self.port else self.destination


@dataclass
class RemoteResult:
    """What a remote command returned."""

    returncode: int
    stdout: bytes
    stderr: bytes

    @property
    def text(self) -> str:
        return self.stdout.decode("utf-8", "replace")

    @property
    def err(self) -> str:
        return self.stderr.decode("utf-8", "replace")


def _classify(stderr: str, target: SSHTarget) -> SSHError:
    """Turn ssh's own error text (exit status 255) into an SSHError that says what to fix."""
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip() and not ln.startswith("Warning: Permanently")]
    last = lines[-1] if lines else "ssh exited with status 255"
    where = target.describe()
    low = stderr.lower()
    if "permission denied" in low or "too many authentication failures" in low:
        return SSHError(f"authentication failed on {where}: {last}", kind="auth", received=where,
                        fix="check the identity file (identity= / -i) and that its public key is in the "
                            "board's ~/.ssh/authorized_keys (ssh-copy-id); nothing prompts (BatchMode)")
    if "host key verification failed" in low or "remote host identification has changed" in low:
        return SSHError(f"host key of {where} is unknown or changed: {last}", kind="hostkey", received=where,
                        fix="connect once with plain ssh to accept the key, or fix ~/.ssh/known_hosts")
    if "connection refused" in low:
        return SSHError(f"connection refused by {where}", kind="unreachable", received=where,
                        fix="check the host and port, and that sshd runs on the board")
    if "could not resolve hostname" in low or "name or service not known" in low:
        return SSHError(f"unknown host {where}: {last}", kind="unreachable", received=where,
                        fix="check the host name (or add a Host entry to ~/.ssh/config)")
    if "timed out" in low:
        return SSHError(f"connection to {where} timed out", kind="timeout", received=where,
                        fix="check that the board is on and on the network")
    if "no route to host" in low or "network is unreachable" in low or "connection closed" in low \
            or "connection reset" in low or "kex_exchange" in low:
        return SSHError(f"cannot reach {where}: {last}", kind="unreachable", received=where,
                        fix="check that the board is on, on the network, and runs sshd on that port")
    return SSHError(f"ssh to {where} failed: {last}", kind="unreachable", received=where,
                    fix="run the same ssh command in a terminal to see what it needs")


@dataclass
class SSHConnection:
    """One board's connection: a control master plus commands that reuse it.

    Use as a context manager; :meth:`open` starts the master (and raises
    :class:`SSHError` when the board cannot be reached), :meth:`close` stops it.
    """

    target: SSHTarget
    control_dir: str | None = None
    _own_dir: bool = field(default=False, init=False)
    _master: bool = field(default=False, init=False)
    _procs: set[subprocess.Popen[bytes]] = field(default_factory=set, init=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False)
    _killed: bool = field(default=False, init=False)

    def __post_init__(self) -> None:
        if shutil.which("ssh") is None:
            raise SSHError("the OpenSSH client (ssh) is not installed on this machine", kind="no-ssh",
                           received=None, fix="install it (Debian/Ubuntu: apt install openssh-client)")
        if self.control_dir is None:
            # Short path: a socket path must fit in ~100 bytes.
            self.control_dir = tempfile.mkdtemp(prefix="edgeq-ssh-")
            self._own_dir = True

    # -- command lines -------------------------------------------------------------
    def ssh_args(self, *, master: str = "auto") -> list[str]:
        """The ``ssh`` arguments up to (and including) the destination."""
        t = self.target
        args = ["ssh"]
        if t.ssh_config:
            args += ["-F", str(Path(t.ssh_config).expanduser())]
        args += [
            "-o", "BatchMode=yes",
            "-o", f"ControlMaster={master}",
            "-o", f"ControlPath={self.control_dir}/%C",
            "-o", "ControlPersist=300",
            "-o", f"ConnectTimeout={max(1, int(t.connect_timeout))}",
            "-o", "ServerAliveInterval=15",
            "-o", "ServerAliveCountMax=4",
            "-o", "LogLevel=ERROR",
        ]
        if t.port:
            args += ["-p", str(t.port)]
        if t.identity:
            args += ["-i", str(Path(t.identity).expanduser()), "-o", "IdentitiesOnly=yes"]
        for opt in t.options:
            args += ["-o", opt]
        args.append(t.destination)
        return args

    # -- lifecycle -----------------------------------------------------------------
    def open(self) -> None:
        """Connect and leave a control master running in the background."""
        with tempfile.TemporaryFile() as errf:
            # -f: go to the background after authentication; stderr goes to a file, not a pipe,
            # so the background master does not keep our pipe open.
            cmd = self.ssh_args(master="yes")
            cmd[1:1] = ["-f", "-N"]
            try:
                proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=errf,
                                      timeout=self.target.connect_timeout + 10, start_new_session=True)
            except subprocess.TimeoutExpired:
                raise SSHError(f"connection to {self.target.describe()} timed out after "
                               f"{self.target.connect_timeout + 10:.0f} s", kind="timeout",
                               received=self.target.describe(),
                               fix="check that the board is on and answers ssh on that port") from None
            errf.seek(0)
            err = errf.read().decode("utf-8", "replace")
        if proc.returncode != 0:
            raise _classify(err, self.target)
        self._master = True

    def close(self) -> None:
        """Stop the control master and remove the private socket folder."""
        self._stop_master()
        if self._own_dir and self.control_dir:
            shutil.rmtree(self.control_dir, ignore_errors=True)

    def kill_running(self) -> None:
        """Stop the commands still running (Ctrl-C on the host): their ssh and the master."""
        self._killed = True
        with self._lock:
            procs = list(self._procs)
        for proc in procs:
            proc.kill()
        if procs:
            self._stop_master()

    def _abort(self, proc: subprocess.Popen[bytes]) -> None:
        # The control master holds copies of a session's pipes (fd passing): killing the mux
        # client alone leaves them open until the remote command ends, so stop the master too.
        proc.kill()
        self._stop_master()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        for stream in (proc.stdin, proc.stdout, proc.stderr):
            if stream is not None:
                try:
                    stream.close()
                except OSError:
                    pass

    def _master_alive(self) -> bool:
        try:
            return subprocess.run([*self.ssh_args(master="no")[:-1], "-O", "check", self.target.destination],
                                  stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                  timeout=10, start_new_session=True).returncode == 0
        except (subprocess.TimeoutExpired, OSError):
            return False

    def _stop_master(self) -> None:
        if not self._master:
            return
        try:
            subprocess.run([*self.ssh_args(master="no")[:-1], "-O", "exit", self.target.destination],
                           stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                           timeout=10, start_new_session=True)
        except (subprocess.TimeoutExpired, OSError):
            pass
        self._master = False

    def __enter__(self) -> SSHConnection:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- commands ------------------------------------------------------------------
    def run(self, command: str | Sequence[str], *, stdin: bytes | IO[bytes] | None = None,
            timeout: float | None = None, check: bool = False, hold_stdin: bool = False) -> RemoteResult:
        """Run ``command`` on the board (a shell string, or argv that is quoted for the shell).

        With ``hold_stdin=True`` the command's standard input stays open until it ends, so
        a remote watchdog can stop it when the connection goes away (Ctrl-C, time-out).
        Raises SSHError(kind="timeout") after ``timeout`` seconds, and
        SSHError for connection failures (ssh's exit status 255). With
        ``check=True`` a non-zero exit of the command raises SSHError(kind="remote").
        """
        if not isinstance(command, str):
            command = " ".join(shlex.quote(str(a)) for a in command)
        # ControlMaster=no: ride on the master open() made; if it is gone, connect directly rather
        # than becoming a background master that would hold this command's pipes open.
        args = [*self.ssh_args(master="no"), "--", command]
        proc = subprocess.Popen(args, stdin=subprocess.PIPE if isinstance(stdin, bytes) or hold_stdin else (
            subprocess.DEVNULL if stdin is None else stdin), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            start_new_session=True)
        with self._lock:
            self._procs.add(proc)
        try:
            if hold_stdin:
                out, err = _communicate_holding_stdin(proc, timeout)
            else:
                out, err = proc.communicate(stdin if isinstance(stdin, bytes) else None, timeout=timeout)
        except subprocess.TimeoutExpired:
            self._abort(proc)
            raise SSHError(f"a step on {self.target.describe()} timed out after {timeout:.0f} s",
                           kind="timeout", received=command[:80] + ("..." if len(command) > 80 else ""),
                           fix="raise timeout= (--timeout) or check that the board is not overloaded") from None
        except BaseException:
            self._abort(proc)
            raise
        finally:
            with self._lock:
                self._procs.discard(proc)
        if self._killed:
            raise SSHError("interrupted", kind="interrupted", received=None)
        result = RemoteResult(proc.returncode, out, err)
        if proc.returncode == 255 and not self._looks_remote(err):
            raise _classify(result.err, self.target)
        if proc.returncode == 255 and self._master and not self._master_alive():
            # the connection went away under the command (the board rebooted, its sshd was killed, the
            # network dropped): not the command's own exit status
            self._master = False
            raise SSHError(f"the connection to {self.target.describe()} dropped during a command", kind="unreachable",
                           received=command[:80] + ("..." if len(command) > 80 else ""),
                           fix="check the board's power and network; the deploy retries such a board (--retries)")
        if check and proc.returncode != 0:
            tail = result.err.strip().splitlines()[-1:] or [f"exit status {proc.returncode}"]
            raise SSHError(f"command failed on {self.target.describe()}: {tail[0]}", kind="remote",
                           received=command[:80], fix="run it by hand on the board to see why")
        return result

    @staticmethod
    def _looks_remote(stderr: bytes) -> bool:
        # ssh itself failing prints "ssh: ..." or a known connection message; a remote program
        # exiting 255 does not.
        text = stderr.decode("utf-8", "replace").lower()
        markers = ("ssh:", "permission denied", "connection", "host key", "could not resolve", "timed out",
                   "kex_exchange", "no route to host", "mux_client")
        return not any(m in text for m in markers)


def _communicate_holding_stdin(proc: subprocess.Popen[bytes], timeout: float | None) -> tuple[bytes, bytes]:
    """Like ``communicate`` but standard input stays open until the process ends."""
    chunks: dict[str, list[bytes]] = {"out": [], "err": []}

    def pump(stream: IO[bytes] | None, key: str) -> None:
        if stream is None:
            return
        try:
            for chunk in iter(lambda: stream.read(65536), b""):
                chunks[key].append(chunk)
        except (OSError, ValueError):
            pass

    readers = [threading.Thread(target=pump, args=(proc.stdout, "out"), daemon=True),
               threading.Thread(target=pump, args=(proc.stderr, "err"), daemon=True)]
    for t in readers:
        t.start()
    proc.wait(timeout=timeout)  # raises TimeoutExpired
    for t in readers:
        t.join(timeout=10)
    if proc.stdin is not None:
        try:
            proc.stdin.close()
        except OSError:
            pass
    return b"".join(chunks["out"]), b"".join(chunks["err"])
