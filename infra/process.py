"""Detached server processes tracked by pid files: start, find again, stop, and nothing left behind.

The local stack runs real servers (a Kafka JVM, clickhouse-server) that must outlive the
``callback stack up`` command that started them, and must be stoppable later by another command
without touching the many other java / clickhouse processes a developer machine may run. So:

* each server starts in its own session (``start_new_session``), making its pid the process-group
  id: stopping signals the whole group, which catches any helper child the server forks;
* its pid goes to a pid file, and a process is only recognised as ours when its command line
  still contains a *marker* (the path of its config file inside the state folder), so a stale pid
  file whose pid was reused by an unrelated process is never signalled.

Linux only (reads ``/proc``), like the rest of the local stack.
"""

from __future__ import annotations

import errno
import logging
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

log = logging.getLogger(__name__)
T = TypeVar("T")

#: Popen handles of servers started by this Python process, by pid. Kept so the objects are not
#: garbage collected while the server runs (CPython warns about that) and so ``stop`` can reap its
#: own children instead of leaving zombies that would look alive to ``kill(pid, 0)``.
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}
#: exit codes of reaped children, so a start failure can report how the server ended
_EXIT_CODES: dict[int, int] = {}


def _proc_stat(pid: int) -> tuple[str, int] | None:
    """(state letter, process group) of a live pid from /proc, or None when it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # the command name (field 2) is parenthesised and may contain spaces; fields after it are fixed
    fields = raw[raw.rindex(")") + 2 :].split()
    return fields[0], int(fields[2])


def _reap(pid: int) -> None:
    """Collect the exit status of our own child so it does not linger as a zombie."""
    child = _CHILDREN.get(pid)
    if child is not None:
        code = child.poll()
        if code is not None:
            _EXIT_CODES[pid] = code
            _CHILDREN.pop(pid, None)
        return
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass  # not our child: its parent (or init) reaps it


def is_alive(pid: int) -> bool:
    """True while ``pid`` runs; a zombie counts as dead (it holds no ports and does no work)."""
    _reap(pid)
    stat = _proc_stat(pid)
    return stat is not None and stat[0] != "Z"


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes of process group ``pgid``."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        stat = _proc_stat(pid)
        if stat is not None and stat[1] == pgid and stat[0] != "Z":
            members.append(pid)
    return members


def cmdline(pid: int) -> str:
    """The command line of ``pid`` as one space-joined string ('' when it is gone)."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (FileNotFoundError, ProcessLookupError):
        return ""
    return raw.replace(b"\0", b" ").decode(errors="replace").strip()


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """Whether a server could listen on ``host:port`` now.

    Binds with SO_REUSEADDR like the servers themselves do, so sockets in TIME_WAIT from a server
    that just stopped do not count as busy, while any listener (also one on 0.0.0.0) does.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                return False
            raise
    return True


def port_accepts(port: int, host: str = "127.0.0.1", timeout: float = 0.5) -> bool:
    """Whether something accepts TCP connections on ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def wait_until(check: Callable[[], T], timeout: float, what: str | None = None, interval: float = 0.1) -> T:
    """Poll ``check`` until it returns something true, and return that; the one wait of the project.

    After ``timeout`` seconds: ``TimeoutError`` naming ``what`` when it is given, otherwise the last
    (false) result, for a caller that reports a timeout in its own words."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() >= deadline:
            if what is not None:
                raise TimeoutError(f"timed out after {timeout:g} s waiting for {what}")
            return value
        time.sleep(interval)


@dataclass(frozen=True)
class ManagedProcess:
    """One detached server known by its pid file.

    ``marker`` must appear in the server's command line (use the absolute path of its config file
    in the state folder): it is how a pid read from the file is confirmed to still be this server.
    """

    name: str
    pid_file: Path
    marker: str

    def read_pid(self) -> int | None:
        try:
            text = self.pid_file.read_text().strip()
        except FileNotFoundError:
            return None
        return int(text) if text.isdigit() else None

    def running_pid(self) -> int | None:
        """Pid of the running server, or None; a stale pid file is removed on the way."""
        pid = self.read_pid()
        if pid is None:
            return None
        if self._is_ours(pid):
            return pid
        log.info("%s: removing stale pid file %s (pid %s is not running)", self.name, self.pid_file, pid)
        self.pid_file.unlink(missing_ok=True)
        return None

    def _is_ours(self, pid: int, settle_s: float = 1.0) -> bool:
        """Whether ``pid`` is alive and runs our command line.

        A process that has just been exec'd shows an empty (or not yet complete) command line for
        a moment: Popen returns as soon as the old image's descriptors close, before the kernel has
        laid out the new one's arguments. So a miss is looked at again for ``settle_s`` before the
        pid file is called stale; deleting a live server's pid file would leave it unstoppable.
        """
        deadline = time.monotonic() + settle_s
        while is_alive(pid):
            if self.marker in cmdline(pid):
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.02)
        return False

    def start(
        self, argv: Sequence[str], cwd: Path, output: Path, env: Mapping[str, str] | None = None,
    ) -> int:
        """Start the server detached (own session, stdin closed, output appended to ``output``)."""
        output.parent.mkdir(parents=True, exist_ok=True)
        with open(output, "ab") as out:  # appended: earlier runs' output stays for post-mortems
            child = subprocess.Popen(
                list(argv), cwd=cwd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                env=dict(env) if env is not None else None, start_new_session=True,
            )
        _CHILDREN[child.pid] = child
        self.pid_file.parent.mkdir(parents=True, exist_ok=True)
        self.pid_file.write_text(f"{child.pid}\n")
        log.info("%s: started pid %d (output in %s)", self.name, child.pid, output)
        return child.pid

    def exit_code(self, pid: int) -> int | None:
        """Exit code of a server this Python process started and that has exited, else None."""
        _reap(pid)
        return _EXIT_CODES.get(pid)

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM the server's process group, SIGKILL what is left after ``timeout`` seconds.

        Returns the pid that was stopped, or None when nothing was running. Waits until no member
        of the group is alive, so ports are free and no child is left when this returns.
        """
        pid = self.running_pid()
        if pid is None:
            return None
        self._signal_group(pid, signal.SIGTERM)
        if not wait_until(lambda: not self._group_alive(pid), timeout):
            log.warning("%s: pid %d still running %.0f s after SIGTERM, sending SIGKILL",
                        self.name, pid, timeout)
            self._signal_group(pid, signal.SIGKILL)
            if not wait_until(lambda: not self._group_alive(pid), 10.0):
                raise OSError(f"{self.name}: process group {pid} survived SIGKILL")
        _reap(pid)
        _CHILDREN.pop(pid, None)
        self.pid_file.unlink(missing_ok=True)
        log.info("%s: stopped pid %d", self.name, pid)
        return pid

    @staticmethod
    def _group_alive(pgid: int) -> bool:
        _reap(pgid)
        return bool(group_members(pgid))

    @staticmethod
    def _signal_group(pgid: int, sig: signal.Signals) -> None:
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            pass
