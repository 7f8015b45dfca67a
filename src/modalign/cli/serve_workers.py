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
import logging
import multiprocessing
import signal
import socket
import sys
import threading
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

from modalign.cli.serve_app import ServePlan, ServeSetupError, build_app

log = logging.getLogger(__name__)

#: exit status of a worker that could not start (uvicorn's STARTUP_FAILURE, for the same reason)
STARTUP_FAILURE = 3
#: a worker that could not start leaves its one-line reason in this file of the shared folder
FAILED_FILE = "failed-{pid}.txt"
#: seconds a worker gets to finish its requests after SIGTERM before it is killed
STOP_GRACE_S = 30


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


def run_worker(plan_json: str, host: str, port: int, options: dict[str, Any]) -> None:
    """One worker process: the plan's app on its own socket of the shared port, until SIGTERM / SIGINT."""
    import uvicorn

    plan = ServePlan.from_json(plan_json)
    try:
        app = build_app(plan, quiet=True)
        sock = port_socket(host, port)
    except (ServeSetupError, OSError) as exc:
        # every worker fails the same way: the parent says it once, and does not restart it
        if plan.shared is not None:
            (Path(plan.shared) / FAILED_FILE.format(pid=multiprocessing.current_process().pid)).write_text(
                str(exc), encoding="utf-8")
        sys.exit(STARTUP_FAILURE)
    uvicorn.Server(uvicorn.Config(app, **options)).run(sockets=[sock])


def failed_reason(shared: str | Path) -> str | None:
    """The reason a worker left in ``shared`` for not starting, if one did."""
    for path in sorted(Path(shared).glob(FAILED_FILE.format(pid="*"))):
        return path.read_text(encoding="utf-8")
    return None


def supervise(plan: ServePlan, host: str, port: int, options: dict[str, Any], workers: int) -> bool:
    """Run ``workers`` worker processes until SIGINT / SIGTERM; False when one could not start."""
    ctx = multiprocessing.get_context("spawn")
    stop = threading.Event()
    failed = False

    def start() -> BaseProcess:
        process = ctx.Process(target=run_worker, args=(plan.to_json(), host, port, options), daemon=False)
        process.start()
        return process

    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    processes: list[BaseProcess] = []
    try:
        processes = [start() for _ in range(workers)]
        while not stop.wait(0.5):
            for i, process in enumerate(processes):
                if process.is_alive():
                    continue
                if process.exitcode == STARTUP_FAILURE:
                    failed = True
                    stop.set()
                    break
                log.warning("worker %s ended with exit code %s; starting another", process.pid, process.exitcode)
                processes[i] = start()
    finally:
        for process in processes:
            if process.is_alive():
                process.terminate()  # SIGTERM: uvicorn finishes the requests under way
        for process in processes:
            process.join(STOP_GRACE_S)
            if process.is_alive():
                process.kill()
                process.join()
        for sig, handler in previous.items():
            with contextlib.suppress(ValueError, TypeError):
                signal.signal(sig, handler)
    return not failed
