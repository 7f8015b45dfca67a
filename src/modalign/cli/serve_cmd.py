"""``modalign serve``: the search API and web page over an index folder."""

from __future__ import annotations

import dataclasses
import gc
import ipaddress
import os
import signal
import sys
import tempfile
from pathlib import Path
from typing import Any

import typer

from modalign.cli._common import parse_mapping
from modalign.cli._config import config_option
from modalign.cli._params import number
from modalign.cli._ui import console, err_console, fail
from modalign.cli.serve_app import ServePlan, ServeSetupError, build_app, open_index, worker_environment
from modalign.cli.serve_workers import failed_reason, free_port_or_fail, hold_port, supervise
from modalign.errors import ModalignError
from modalign.search import Index
from modalign.search.store import IndexStore
from modalign.search.stores import one_process_only
from modalign.server import ServerSettings
from modalign.server.runtimes import AS_INDEXED, AUTO


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def serve_command(
    config: Path | None = config_option(),
    index_dir: Path = typer.Option(..., "--index", help="index directory from `modalign index`"),
    data_root: Path | None = typer.Option(None, "--data-root", help="folder the dataset is in now, if it moved "
                                          "since it was indexed (items' paths are relative to it)"),
    trust_code: bool = typer.Option(False, "--trust-code", help="let a model or index from someone else run "
                                    "the code its encoders name (py:MODULE:FACTORY, plugins); off: refused"),
    host: str = typer.Option("127.0.0.1", "--host", help="address to listen on (loopback by default)"),
    port: int = typer.Option(8000, "--port", min=0, max=65535, help="port to listen on (0: any free one)"),
    max_upload_mb: float = typer.Option(10.0, "--max-upload-mb", parser=number(0, 1_000_000, above=True),
                                        help="largest accepted request body"),
    max_text_chars: int = typer.Option(1000, "--max-text-chars", help="longest text query accepted (422 above)"),
    max_k: int = typer.Option(1000, "--max-k", min=1, max=10000, help="most results one search may ask for"),
    cors_origin: list[str] = typer.Option([], "--cors-origin", help="allow browser calls from this origin "
                                          "(repeatable; CORS is off by default)"),
    timeout: float = typer.Option(30.0, "--timeout", parser=number(0.1, 86_400),
                                  help="seconds a client may take to send a request "
                                  "body (then 408) and one search may take (then 503)"),
    log_level: str = typer.Option("warning", "--log-level", help="uvicorn log level"),
    torch_threads: int = typer.Option(0, "--torch-threads", min=0, help="threads that encode each batch of "
                                      "queries (torch and onnxruntime); 0 = the cores shared out among the workers"),
    runtime: str = typer.Option("auto", "--runtime", help="encoder runtime of the queries: auto (onnx for an "
                                "encoder built in torch that has it: the same features, faster), index (as the "
                                "index was built), or MODALITY=torch|onnx|onnx-int8,..."),
    max_batch: int = typer.Option(64, "--max-batch", min=1, max=1024, help="text/image queries that arrive "
                                  "together are encoded and searched in one batch of at most this many "
                                  "(1 = one request at a time)"),
    batch_wait_ms: float = typer.Option(0.0, "--batch-wait-ms", parser=number(0, 1000), help="milliseconds a "
                                        "query waits for others to share its batch (0: a query goes at once when "
                                        "the encoder is idle; those that arrive while it is busy form the next batch)"),
    hubness: bool = typer.Option(False, "--hubness", help="re-score text/image/audio queries by the index's "
                                 "hubness statistics (CSLS or inverted softmax, from `modalign index --hubness`)"),
    workers: int = typer.Option(1, "--workers", min=1, max=64, help="server processes sharing the port, each "
                                "with its own encoders and event loop; an exact index's vectors are written once "
                                "to a temporary folder (TMPDIR) and memory-mapped by all of them"),
) -> None:
    """Serve POST /search, GET /items/{id}, /health, the OpenAPI schema (/docs) and the web page (/)."""
    import uvicorn

    if not (index_dir / "index.json").is_file():
        raise fail(f"--index {index_dir}: not a modalign index (run `modalign index` first)")
    if data_root is not None and not data_root.is_dir():
        raise fail(f"--data-root {data_root}: not a folder")
    settings = ServerSettings(max_upload_bytes=int(max_upload_mb * 1024 * 1024), max_text_chars=max_text_chars,
                              max_k=max_k, cors_origins=tuple(cors_origin), body_timeout_s=timeout,
                              search_timeout_s=timeout, max_batch=max_batch, batch_wait_ms=batch_wait_ms,
                              workers=workers)
    choice = runtime if runtime in (AUTO, AS_INDEXED) else parse_mapping(runtime, "--runtime")
    plan = ServePlan(index_dir=str(index_dir), data_root=None if data_root is None else str(data_root),
                     settings=settings, hubness=hubness, torch_threads=torch_threads, runtime=choice,
                     trust_code=trust_code)
    if not _is_loopback(host):
        err_console.print(f"[yellow]warning:[/] listening on {host}: the API has no authentication; anyone who "
                          "can reach this address can search the index and fetch its items")
    # idle keep-alive connections are closed after 5 s, so parked clients do not pile up
    options: dict[str, Any] = {"host": host, "port": port, "log_level": log_level, "timeout_keep_alive": 5,
                               "access_log": log_level in ("info", "debug")}
    if workers == 1:
        try:  # before loading anything and before saying "serving": a busy port is one line, exit 3
            free_port_or_fail(host, port)
        except OSError as exc:
            raise fail(f"cannot listen on {host}:{port}: {exc.strerror or exc}", code=3) from None
        try:
            app = build_app(plan)
        except ServeSetupError as exc:
            raise fail(str(exc)) from None
        _say_serving(index_dir, app.state.index, host, port, "")
        uvicorn.run(app, **options)
        return
    try:
        only_one = one_process_only(IndexStore(index_dir).manifest.store, index_dir)
    except ModalignError as exc:
        raise fail(str(exc)) from None
    if only_one is not None:
        raise fail(f"--workers {workers}: {only_one}; serve it with one process")
    # SIGTERM while the index is opened and shared unwinds like Ctrl-C, so the shared copy is deleted
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    with tempfile.TemporaryDirectory(prefix="modalign-serve-") as shared:
        try:
            index = open_index(plan)
        except ServeSetupError as exc:
            raise fail(str(exc)) from None
        try:
            index.share(shared)
        except OSError as exc:
            raise fail(f"cannot write the index's shared vectors to {shared}: {exc.strerror or exc} "
                       "(set TMPDIR to a folder with room)") from None
        try:
            held = hold_port(host, port)  # holds the port (never listens) while the workers bind it too
        except OSError as exc:
            raise fail(f"cannot listen on {host}:{port}: {exc.strerror or exc}", code=3) from None
        with held:
            port = held.getsockname()[1]
            _say_serving(index_dir, index, host, port, f" with {workers} workers")
            index.close()  # the workers map the shared copy or open the store themselves; this process supervises
            del index
            gc.collect()
            os.environ.update(worker_environment(plan))  # the spawned workers start with it
            if not supervise(dataclasses.replace(plan, shared=shared), host, port, {**options, "port": port},
                             workers):
                raise fail(failed_reason(shared) or "a worker could not start")


def _say_serving(index_dir: Path, index: Index, host: str, port: int, how: str) -> None:
    where = index.backend if index.vstore.kind == "local" else f"{index.vstore.kind} store"
    address = f"[{host}]" if ":" in host else host
    console.print(f"[green]serving[/] {index_dir} ({len(index)} items, {where}) on http://{address}:{port}/{how}",
                  highlight=False)
