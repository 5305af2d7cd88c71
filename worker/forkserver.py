"""Job processes forked from a warm parent: one fresh process per job without importing torch per job.

A job needs torch and glorot_core (seconds to import on a busy machine) but does tiny work for the
common diagnosis at initialisation (tens of milliseconds). Importing per job would dominate it, so a
*warm* parent imports the job modules once (:func:`preload_job_modules`) and forks each job's process
from there (:func:`fork_job`): the child starts in milliseconds with everything loaded, and still is a
process of its own, so a crash, a leak or a kill ends that job alone.

The warm parent must never have initialised CUDA: a forked child cannot use a CUDA context made
before the fork (pytorch#40403), and even ``torch.cuda.is_available()`` can poison it (pytorch#68861).
Importing torch does not initialise CUDA; :func:`preload_job_modules` checks that nothing did.

Two warm parents use this module:

* the local runner's **fork server** (:class:`ForkServer`): a process *spawned* once by the runner (the
  API process stays torch-free), which preloads, then forks one child per job on request over a pipe
  and reports each child's pid and exit status back. The runner kills a job by asking the fork server,
  which signals only children it has not reaped yet (never a recycled pid);
* a Celery pool process (``worker.tasks.run_job``), forked by the worker's parent after the parent
  preloaded (``worker.celery_app``), which forks the job's process and waits for it.

Every job process asks the kernel for ``SIGKILL`` when its parent dies (``PR_SET_PDEATHSIG``): a job
never outlives the fork server or the Celery pool process that supervises it (Celery's hard time limit
kills the pool process; the job goes with it).
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib
import itertools
import logging
import multiprocessing
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from typing import Any

log = logging.getLogger("glorot.forkserver")

#: Imported once in a warm parent so that every forked job process starts with them loaded (torch
#: included: importing it does not initialise CUDA), and the database drivers a job connects with.
JOB_MODULES = (
    "worker.execute",
    "glorot_core.runner",
    "glorot_core.report",
    "glorot_core.spec",
    "glorot_core.data",
    "sqlite3",
    "sqlalchemy.dialects.sqlite.pysqlite",
    "psycopg",
    "sqlalchemy.dialects.postgresql.psycopg",
)

_PR_SET_PDEATHSIG = 1
#: Seconds a fork server has to import the job modules and say it is ready.
READY_TIMEOUT_S = 300.0
#: Seconds to wait for the fork server to confirm a fork.
FORK_TIMEOUT_S = 60.0
#: Least seconds between two starts by :meth:`ForkServer.start` (a server that keeps dying at import).
RESTART_BACKOFF_S = 5.0


def preload_job_modules(modules: Iterable[str] = JOB_MODULES) -> None:
    """Import the job modules, then make sure CUDA is still untouched in this (forking) process.

    A module that fails to import is logged and skipped: the job process imports it again and
    records the error on the job's row. Raises :class:`RuntimeError` when CUDA is initialised."""
    for name in modules:
        try:
            importlib.import_module(name)
        except Exception:  # an ImportError, or a broken module (SyntaxError) the job will report
            log.exception("could not preload %s", name)
    check_cuda_untouched()


def check_cuda_untouched() -> None:
    """Raise :class:`RuntimeError` if this process initialised CUDA (its forked children could not use it)."""
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_initialized():
        raise RuntimeError("CUDA was initialised in a process that forks jobs; forked jobs could not use it")


def describe_exit(status: int) -> str:
    """``os.waitpid``'s status in words: ``exited with code N`` or ``killed by signal N``."""
    if os.WIFSIGNALED(status):
        return f"killed by signal {os.WTERMSIG(status)}"
    return f"exited with code {os.waitstatus_to_exitcode(status)}"


def _die_with_parent(parent: int) -> None:
    """Ask for SIGKILL when the parent dies (Linux); exit at once if it already has."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:  # it died between the fork and the prctl
        os._exit(1)


def _become_main_process() -> None:
    """Let the job use ``multiprocessing`` as a process of its own: the fork server is a daemonic
    multiprocessing child, and a job forked from it would otherwise inherit that flag and be refused
    children ("daemonic processes are not allowed to have children"), and its sibling list."""
    with contextlib.suppress(AttributeError):
        multiprocessing.current_process()._config.pop("daemon", None)  # type: ignore[attr-defined]
        multiprocessing.process._children = set()  # type: ignore[attr-defined]


def fork_job(target: Callable[..., object], args: tuple[Any, ...] = (), *, close: Iterable[Any] = ()) -> int:
    """Fork a job process that runs ``target(*args)`` and exits; returns its pid (in the parent).

    The child closes ``close`` (the parent's pipes and pidfds: file descriptors or objects with
    ``close()``), dies with its parent, may start processes of its own (not daemonic), restores default
    signal handling (a Celery pool process and a fork server install their own) but ignores SIGINT
    (Ctrl-C in a terminal is the supervisor's to handle), and exits with 0 when ``target`` returns, 1
    when it raises (traceback on stderr; ``sys.exit(n)`` exits with ``n``). It never returns into the
    parent's code, so nothing of the parent's (atexit hooks, pools) runs twice.
    """
    parent = os.getpid()
    pid = os.fork()
    if pid:
        return pid
    code = 1
    try:
        _die_with_parent(parent)
        _become_main_process()
        for thing in close:
            with contextlib.suppress(OSError):
                if isinstance(thing, int):
                    os.close(thing)
                else:
                    thing.close()
        for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2, signal.SIGCHLD):
            signal.signal(sig, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        target(*args)
        code = 0
    except SystemExit as e:  # sys.exit(n) in the job: exit with n (None → 0, anything else → 1)
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except BaseException:  # the child reports everything else, then exits
        with contextlib.suppress(Exception):
            traceback.print_exc()
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)


# -------------------------------------------------------------------------------------------- server


def _serve(conn: Connection, modules: tuple[str, ...]) -> None:
    """The fork server's main loop (in its own spawned process).

    Requests (pickled tuples): ``("fork", token, target, args)``, ``("kill", token)``. Replies:
    ``("ready", pid)`` once the modules are loaded, ``("forked", token, pid)`` or ``("failed", token,
    error)``, and ``("exited", token, how)`` when a child ends. Exits when the runner's end of the pipe
    closes (the runner stopped or died), killing the children it still has.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C on `glorot serve` is the runner's to handle
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s [pid %(process)d] %(name)s: %(message)s")
    preload_job_modules(modules)
    conn.send(("ready", os.getpid()))
    children: dict[int, tuple[str, int | None]] = {}  # pid -> (token, pidfd)
    by_token: dict[str, int] = {}
    try:
        while True:
            fds = {fd: pid for pid, (_, fd) in children.items() if fd is not None}
            polling = any(fd is None for _, fd in children.values())
            ready = wait([conn, *fds], timeout=0.05 if polling else None)
            if conn in ready:
                try:
                    msg = conn.recv()
                except (EOFError, OSError):
                    return  # the runner is gone
                if msg[0] == "fork":
                    _, token, target, args = msg
                    try:
                        pid = fork_job(target, args, close=[conn, *fds])
                    except Exception as e:
                        conn.send(("failed", token, f"{type(e).__name__}: {e}"))
                        continue
                    pidfd: int | None = None
                    with contextlib.suppress(OSError, AttributeError):
                        pidfd = os.pidfd_open(pid)
                    children[pid] = (token, pidfd)
                    by_token[token] = pid
                    conn.send(("forked", token, pid))
                elif msg[0] == "kill":
                    pid = by_token.get(msg[1], 0)
                    if pid in children:  # not reaped yet: the pid is still this child's
                        os.kill(pid, signal.SIGKILL)
            for pid in list(children):
                done, status = os.waitpid(pid, os.WNOHANG)
                if done:
                    token, pidfd = children.pop(pid)
                    by_token.pop(token, None)
                    if pidfd is not None:
                        os.close(pidfd)
                    conn.send(("exited", token, describe_exit(status)))
    finally:
        for pid in children:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)


# -------------------------------------------------------------------------------------------- client


@dataclass
class JobProcess:
    """A job process forked by the fork server, as the runner sees it."""

    token: str
    server: ForkServer
    generation: int
    pid: int | None = None
    #: ``exited with code N`` / ``killed by signal N`` / why it was lost; None while it runs.
    exit_reason: str | None = None
    #: True when the process ended because the fork server died (not the job's doing).
    server_lost: bool = False
    forked: threading.Event = field(default_factory=threading.Event)
    done: threading.Event = field(default_factory=threading.Event)

    def is_alive(self) -> bool:
        return not self.done.is_set()

    def kill(self) -> None:
        """SIGKILL the job's process (through the fork server, which knows whether it has ended)."""
        self.server.kill(self)

    def join(self, timeout: float | None = None) -> bool:
        """Wait until the process has ended (the fork server reaped it); True if it has."""
        return self.done.wait(timeout)


class ForkServerLost(RuntimeError):
    """The fork server died or did not answer."""


class ForkServer:
    """The runner's end of a fork server: starts it, asks it for job processes, hears their ends.

    ``notify`` is called (from a reader thread) when the server becomes ready and whenever a job
    process ends or is lost, so a supervisor can wake up at once. If the fork server dies, its job
    processes die with it (they have ``PR_SET_PDEATHSIG``): each is reported ended with the reason
    ``died with the fork server`` (``server_lost``), and the next :meth:`start` or :meth:`fork`
    starts a new server.
    """

    def __init__(self, notify: Callable[[], None] | None = None, modules: tuple[str, ...] = JOB_MODULES) -> None:
        self._notify = notify or (lambda: None)
        self._modules = modules
        self._mp = multiprocessing.get_context("spawn")
        self._lock = threading.Lock()  # one request at a time; guards the fields below
        self._proc: Any = None
        self._conn: Connection | None = None
        self._ready = threading.Event()
        self._jobs: dict[str, JobProcess] = {}
        self._tokens = itertools.count(1)
        self._generation = 0
        self._started_at = -RESTART_BACKOFF_S

    @property
    def pid(self) -> int | None:
        """The fork server's pid (None before it was started)."""
        return self._proc.pid if self._proc is not None else None

    def is_alive(self) -> bool:
        return self._proc is not None and self._proc.is_alive()

    def ready(self) -> bool:
        """Whether a :meth:`fork` now would be answered at once (the server has loaded its modules)."""
        with self._lock:
            return self._conn is not None and self._ready.is_set() and self.is_alive()

    def start(self) -> None:
        """Spawn the fork server unless it runs (it imports the job modules in the background and
        notifies when ready); a server that died is replaced at most every :data:`RESTART_BACKOFF_S`."""
        with self._lock:
            if time.monotonic() - self._started_at >= RESTART_BACKOFF_S or self._proc is None:
                self._start_locked()

    def _start_locked(self) -> None:
        if self._proc is not None and self._proc.is_alive() and self._conn is not None:
            return  # running (a server whose pipe the reader closed is on its way out: replace it)
        self._close_locked()
        ours, theirs = self._mp.Pipe(duplex=True)
        proc = self._mp.Process(target=_serve, args=(theirs, self._modules), name="glorot-forkserver", daemon=True)
        proc.start()
        theirs.close()
        self._generation += 1
        self._started_at = time.monotonic()
        self._proc, self._conn, self._ready = proc, ours, threading.Event()
        threading.Thread(target=self._read, args=(ours, proc, self._ready, self._generation),
                         name="glorot-forkserver-reader", daemon=True).start()  # fmt: skip
        log.info("fork server %d starting", proc.pid)

    def fork(self, target: Callable[..., object], args: tuple[Any, ...] = ()) -> JobProcess:
        """A new job process running ``target(*args)`` (a module-level function: it is pickled by name).

        Starts the fork server first if needed (a dead one is replaced). Raises :class:`ForkServerLost`
        when the server cannot be started or does not confirm the fork."""
        with self._lock:
            self._start_locked()
            ready, proc = self._ready, self._proc
        if not ready.wait(READY_TIMEOUT_S) or not proc.is_alive():
            raise ForkServerLost(f"the fork server did not become ready (exit code {proc.exitcode})")
        with self._lock:
            job = JobProcess(token=str(next(self._tokens)), server=self, generation=self._generation)
            self._jobs[job.token] = job
            try:
                if self._conn is None:
                    raise OSError("its pipe is closed")
                self._conn.send(("fork", job.token, target, args))
            except (OSError, ValueError) as e:
                self._jobs.pop(job.token, None)
                raise ForkServerLost(f"the fork server is gone: {e}") from e
        if not job.forked.wait(FORK_TIMEOUT_S) or job.pid is None:
            self._jobs.pop(job.token, None)
            raise ForkServerLost(job.exit_reason or "the fork server did not confirm the fork")
        return job

    def kill(self, job: JobProcess) -> None:
        """SIGKILL ``job``'s process if it is still running."""
        with self._lock:
            if job.done.is_set() or self._conn is None:
                return
            with contextlib.suppress(OSError, ValueError):
                self._conn.send(("kill", job.token))

    def stop(self, timeout: float = 10.0) -> None:
        """Close the pipe: the fork server kills its remaining children and exits."""
        with self._lock:
            proc = self._proc
            self._close_locked()
            self._proc = None
        if proc is not None:
            proc.join(timeout)
            if proc.is_alive():
                proc.kill()
                proc.join(5)

    def _close_locked(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(OSError):
                self._conn.close()
            self._conn = None

    def _read(self, conn: Connection, proc: Any, ready: threading.Event, generation: int) -> None:
        """Reader thread of one fork server's lifetime: replies to jobs, then the loss of the server."""
        try:
            while True:
                msg = conn.recv()
                kind = msg[0]
                if kind == "ready":
                    ready.set()
                    self._notify()
                    continue
                job = self._jobs.get(msg[1])
                if job is None:
                    continue
                if kind == "forked":
                    job.pid = msg[2]
                    job.forked.set()
                elif kind == "failed":
                    job.exit_reason = f"could not fork: {msg[2]}"
                    job.forked.set()
                elif kind == "exited":
                    self._end(job, msg[2])
        except (EOFError, OSError, ValueError):
            pass  # the server died or the runner closed the pipe
        ready.set()  # nobody waits forever for a dead server
        proc.join(5)
        with self._lock:
            if self._generation == generation:
                self._close_locked()
            lost = [j for j in self._jobs.values() if j.generation == generation and not j.done.is_set()]
        if lost:
            log.error("fork server %s ended (exit code %s) with %d job process(es)", proc.pid, proc.exitcode,
                      len(lost))  # fmt: skip
        for job in lost:
            job.server_lost = True
            job.forked.set()
            self._end(job, "died with the fork server")

    def _end(self, job: JobProcess, reason: str) -> None:
        job.exit_reason = reason
        job.done.set()
        self._jobs.pop(job.token, None)
        self._notify()
