"""``modalign serve``: the search API and web page over an index folder."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import typer

from modalign.cli._ui import console, err_console, fail
from modalign.errors import ModalignError


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def serve_command(
    index_dir: Path = typer.Option(..., "--index", help="index directory from `modalign index`"),
    data_root: Path | None = typer.Option(None, "--data-root", help="folder the dataset is in now, if it moved "
                                          "since it was indexed (items' paths are relative to it)"),
    host: str = typer.Option("127.0.0.1", "--host", help="address to listen on (loopback by default)"),
    port: int = typer.Option(8000, "--port", min=0, max=65535),
    max_upload_mb: float = typer.Option(10.0, "--max-upload-mb", help="largest accepted request body"),
    max_text_chars: int = typer.Option(1000, "--max-text-chars"),
    max_k: int = typer.Option(1000, "--max-k", min=1, max=10000),
    cors_origin: list[str] = typer.Option([], "--cors-origin", help="allow browser calls from this origin "
                                          "(repeatable; CORS is off by default)"),
    timeout: float = typer.Option(30.0, "--timeout", min=0.1, help="seconds a client may take to send a request "
                                  "body (then 408) and one search may take (then 503)"),
    log_level: str = typer.Option("warning", "--log-level", help="uvicorn log level"),
    torch_threads: int = typer.Option(1, "--torch-threads", min=1, help="intra-op threads per query encode "
                                      "(requests already run in parallel; more threads mostly add contention)"),
    max_batch: int = typer.Option(64, "--max-batch", min=1, max=1024, help="text/image queries that arrive "
                                  "together are encoded and searched in one batch of at most this many "
                                  "(1 = one request at a time)"),
    batch_wait_ms: float = typer.Option(5.0, "--batch-wait-ms", min=0.0, max=1000.0, help="milliseconds a "
                                        "query waits for others to share its batch"),
    hubness: bool = typer.Option(False, "--hubness", help="re-score text/image/audio queries by the index's "
                                 "hubness statistics (CSLS or inverted softmax, from `modalign index --hubness`)"),
) -> None:
    """Serve POST /search, GET /items/{id}, /health, the OpenAPI schema (/docs) and the web page (/)."""
    import torch
    import uvicorn

    from modalign.server import ServerSettings, create_app

    if not (index_dir / "index.json").is_file():
        raise fail(f"--index {index_dir}: not a modalign index (run `modalign index` first)")
    if data_root is not None and not data_root.is_dir():
        raise fail(f"--data-root {data_root}: not a folder")
    torch.set_num_threads(torch_threads)
    settings = ServerSettings(max_upload_bytes=int(max_upload_mb * 1024 * 1024), max_text_chars=max_text_chars,
                              max_k=max_k, cors_origins=tuple(cors_origin), body_timeout_s=timeout,
                              search_timeout_s=timeout, max_batch=max_batch, batch_wait_ms=batch_wait_ms)
    try:
        app = create_app(index_dir, settings, data_root=data_root)
    except (ModalignError, ValueError) as exc:
        raise fail(str(exc)) from None
    if hubness:
        from modalign.search.hubness import use_hubness

        try:
            stats = use_hubness(app.state.index, folder=index_dir)
        except ModalignError as exc:
            raise fail(str(exc)) from None
        console.print(f"hubness {stats.method} {'k' if stats.method == 'csls' else 'β'}={stats.value:g}")
    if not _is_loopback(host):
        err_console.print(f"[yellow]warning:[/] listening on {host}: the API has no authentication; anyone who "
                          "can reach this address can search the index and fetch its items")
    index = app.state.index
    if index.model is not None:
        with console.status("loading encoders"):
            # load weights before listening, so the first search is not the slow one
            try:
                for modality in index.model.modalities:
                    index.model.encoder_for(modality)
            except (ModalignError, ValueError, KeyError) as exc:
                # a path gone, a plugin not installed or changed weights: say which spec, not a traceback
                message = str(exc).strip("'\"")
                raise fail(f"modality {modality!r}: {message}") from None
    where = index.backend if index.vstore.kind == "local" else f"{index.vstore.kind} store"
    console.print(f"[green]serving[/] {index_dir} ({len(index)} items, {where}) on http://{host}:{port}/",
                  highlight=False)
    # idle keep-alive connections are closed after 5 s, so parked clients do not pile up
    uvicorn.run(app, host=host, port=port, log_level=log_level, access_log=log_level in ("info", "debug"),
                timeout_keep_alive=5)
