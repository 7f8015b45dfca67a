"""``modalign serve --workers N``: N server processes on one port, each with its own listening socket.

Hand-written rather than uvicorn's own ``workers=N`` supervisor: that one hands every worker the same
listening socket, and the kernel then gives most connections to one of them (measured on 2 cores, 32
keep-alive clients: one worker spent 11.9 s of CPU, the other 2.8 s, and the pair served fewer queries
than one process). Here each worker binds its own socket with ``SO_REUSEPORT``, so the kernel spreads
connections over the workers by address hash. The parent holds the port with a bound socket that
never listens (so ``--port 0`` resolves once, and a port in use is one error line before anything
starts), and supervises: a worker that cannot start stops serve with its reason; one that dies later
is replaced; SIGINT / SIGTERM stop them all.

Workers are fresh interpreters (spawn, not fork: the parent has imported torch) that each build the
app from the plan and map the index vectors the parent shared (``search/shared.py``).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import logging
import multiprocessing
import signal
import socket
import sys
import time
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any, NoReturn

from modalign.cli.serve_app import ServePlan, ServeSetupError, build_app

log = logging.getLogger(__name__)

#: exit status of a worker that could not start (uvicorn's STARTUP_FAILURE, for the same reason)
STARTUP_FAILURE = 3
#: a worker that could not start leaves its one-line reason in this file of the shared folder
FAILED_FILE = "failed-{pid}.txt"
#: seconds the workers get to finish their requests after SIGTERM before they are killed
STOP_GRACE_S = 30
#: deaths per minute after which a worker slot is not refilled
RESTARTS = 5
#: prctl option: a signal for this process when its parent dies (Linux)
PR_SET_PDEATHSIG = 1


def port_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to (host, port) that other sockets of this user may bind too (SO_REUSEPORT)."""
    if not hasattr(socket, "SO_REUSEPORT"):
        raise OSError("--workers needs SO_REUSEPORT, which this platform lacks")
    # proto IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on sockets that say so, and without it
    # every response waits ~40 ms for the client's delayed ACK (Nagle)
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


def free_port_or_fail(host: str, port: int) -> int:
    """The port (port 0 resolved) when (host, port) can be bound now, else OSError (EADDRINUSE, EACCES ...).
    A plain bind: it also fails when another SO_REUSEPORT server listens there. The port stays free."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind((host, port))
        return int(probe.getsockname()[1])


def hold_port(host: str, port: int) -> socket.socket:
    """The parent's socket on (host, port), bound but never listening, that the workers' sockets join.
    ``free_port_or_fail`` first, so another SO_REUSEPORT server cannot end up sharing our connections."""
    return port_socket(host, free_port_or_fail(host, port))


def _die_with_parent() -> None:
    """Linux: SIGTERM this process when its parent dies, so a killed supervisor leaves no worker behind."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def run_worker(plan_json: str, host: str, port: int, options: dict[str, Any]) -> None:
    """One worker process: the plan's app on its own socket of the shared port, until SIGTERM / SIGINT."""
    import uvicorn

    _die_with_parent()
    # Ctrl-C reaches the whole process group; the parent stops the workers with SIGTERM, so a worker
    # still loading its encoders ignores SIGINT instead of printing a KeyboardInterrupt traceback
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    plan = ServePlan.from_json(plan_json)
    try:
        app = build_app(plan, quiet=True)
        sock = port_socket(host, port)
    except (ServeSetupError, OSError) as exc:
        _failed(plan, str(exc))
    except Exception as exc:  # an encoder or plugin failing its own way: still one line, never a restart loop
        _failed(plan, f"{type(exc).__name__}: {exc}")
    server = uvicorn.Server(uvicorn.Config(app, **options))
    server.run(sockets=[sock])
    if not server.started:  # uvicorn returns when its startup fails (it logged why)
        _failed(plan, "the server did not start")


def _failed(plan: ServePlan, reason: str) -> NoReturn:
    if plan.shared is not None:
        path = Path(plan.shared) / FAILED_FILE.format(pid=multiprocessing.current_process().pid)
        path.write_text(reason, encoding="utf-8")
    sys.exit(STARTUP_FAILURE)


def failed_reason(shared: str | Path) -> str | None:
    """The reason a worker left in ``shared`` for not starting, if one did."""
    for path in sorted(Path(shared).glob(FAILED_FILE.format(pid="*"))):
        return path.read_text(encoding="utf-8")
    return None


def supervise(plan: ServePlan, host: str, port: int, options: dict[str, Any], workers: int) -> bool:
    """Run ``workers`` worker processes until SIGINT / SIGTERM; False when the first ones could not start
    (or every worker has failed for good).

    A worker of the first set that cannot start is fatal: the others would fail the same way. A later
    replacement that cannot start (the index changed since serve started, say) is not: the slot stays
    empty, with its reason logged, and the other workers go on serving. A worker that dies is replaced,
    at most RESTARTS times per minute per slot."""
    ctx = multiprocessing.get_context("spawn")
    stopping: list[int] = []  # a plain list, not an Event: a signal handler must take no lock

    def start() -> BaseProcess:
        process = ctx.Process(target=run_worker, args=(plan.to_json(), host, port, options), daemon=False)
        process.start()
        return process

    previous = {sig: signal.signal(sig, lambda signum, _: stopping.append(signum))
                for sig in (signal.SIGINT, signal.SIGTERM)}
    slots: list[BaseProcess | None] = []
    deaths: list[list[float]] = [[] for _ in range(workers)]
    failed = False
    try:
        for _ in range(workers):
            slots.append(start())
        first_set = set(slots)
        while not stopping:
            time.sleep(0.5)
            for i, process in enumerate(slots):
                if process is None or process.is_alive():
                    continue
                code = process.exitcode
                if code == STARTUP_FAILURE and process in first_set:
                    failed = True
                    stopping.append(0)
                    break
                reason = failed_reason(plan.shared) if plan.shared else None
                now = time.monotonic()
                deaths[i] = [t for t in deaths[i] if now - t < 60] + [now]
                if code == STARTUP_FAILURE or len(deaths[i]) > RESTARTS:
                    log.warning("worker %s ended (exit code %s%s); its slot stays empty", process.pid, code,
                                f": {reason}" if code == STARTUP_FAILURE and reason else "")
                    slots[i] = None
                else:
                    log.warning("worker %s ended with exit code %s; starting another", process.pid, code)
                    slots[i] = start()
            if not stopping and all(p is None for p in slots):
                log.warning("no worker is left")
                failed = True
                break
    finally:
        alive = [p for p in slots if p is not None and p.is_alive()]
        for process in alive:
            process.terminate()  # SIGTERM: uvicorn finishes the requests under way
        deadline = time.monotonic() + STOP_GRACE_S
        for process in alive:
            process.join(max(0.0, deadline - time.monotonic()))
            if process.is_alive():
                process.kill()
                process.join()
        for sig, handler in previous.items():
            with contextlib.suppress(ValueError, TypeError):
                signal.signal(sig, handler)
    return not failed
