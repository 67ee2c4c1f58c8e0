"""`dsr serve` (the API, its pages and the flows) and `dsr demo`."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Annotated, Any

import typer

from doors.cli.common import EXIT_BAD_INPUT, EXIT_NOT_COMPLETED, app, err, fail, open_service, out
from doors.cli.running import connector_setting_problems, prepare_prefect, run_with_progress
from dsr.service import DsrService


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8080,
    prefect_port: Annotated[int | None, typer.Option(help="Port of the embedded Prefect server (default: a free one).")] = None,
    api_only: Annotated[bool, typer.Option("--api-only", help="Only the HTTP API; flows run on the Prefect server at PREFECT_API_URL.")] = False,
) -> None:
    """Serve the HTTP API (docs at /docs), the officer console (/console), the privacy center (/privacy),
    the auditor page (/auditor) and the flows: a request runs when verified, the deadline sweep hourly,
    the retention purge nightly (embedded Prefect server)."""
    with open_service() as service:
        serve_app(service, host=host, port=port, prefect_port=prefect_port, api_only=api_only)


def serve_app(service: DsrService, *, host: str, port: int, prefect_port: int | None = None, api_only: bool = False,
               extra_tokens: tuple[Any, ...] = (), intake_smtp: Any = None, banner: Any = None) -> None:
    """`dsr serve` (and `dsr demo --serve`): the API and its pages, with the embedded Prefect server
    unless `api_only`. `extra_tokens` are access entries added in memory (the demo's officer token);
    `banner()` prints once everything listens."""
    import uvicorn

    from doors.api.app import create_app
    from dsr.access import AccessConfig, load_access

    loaded = load_access(service.settings.access_path)
    access = AccessConfig(tokens=(*loaded.tokens, *extra_tokens)) if extra_tokens else loaded
    store = service.evidence_store()
    store.ensure_ready()
    if not access.tokens:
        err.print(f"[yellow]no officer or auditor tokens in {service.settings.access_path}: "
                  "create one with `dsr token create`[/yellow]")
    # The API and intake work without them, but every run would record these systems as failed.
    for problem in connector_setting_problems(service, sorted(service.data_map.enabled())):
        err.print(f"[yellow]warning:[/yellow] {problem} (data map: {service.settings.systems_path})")
    from doors.api.limits import uvicorn_proxy_options

    try:  # forwarded headers are believed from the configured proxies only (DSR_TRUSTED_PROXIES)
        proxies = uvicorn_proxy_options(service.settings.trusted_proxies)
    except ValueError as exc:
        fail(EXIT_BAD_INPUT, str(exc))
    api = uvicorn.Server(uvicorn.Config(create_app(service, access, store, intake_smtp=intake_smtp), host=host,
                                        port=port, log_level="warning", **proxies))
    if api_only:
        from flows.events import install

        install(service)  # with PREFECT_API_URL set, verifications reach the shared server's trigger
        err.print(f"serving on http://{host}:{port} (API docs at /docs, console at /console, privacy center "
                  "at /privacy, auditor page at /auditor)")
        if banner is not None:
            banner()
        api.run()
        return
    prepare_prefect(service.settings)
    from flows.serve import EmbeddedServeError, PrefectServer, serve_embedded

    def ready(prefect: PrefectServer) -> None:
        err.print(f"serving on http://{host}:{port} (API docs at /docs, console at /console, privacy center "
                  f"at /privacy, auditor page at /auditor); flows on Prefect at "
                  f"{prefect.api_url.removesuffix('/api')} (process-request on verification, deadline-sweep "
                  "hourly, retention-purge nightly)")
        if banner is not None:
            banner()

    err.print("starting the embedded Prefect server (first start 10-20 s)...")
    try:
        serve_embedded(prefect_port=prefect_port, api=api.run,
                       api_stop=lambda: setattr(api, "should_exit", True), service=service, on_ready=ready)
    except EmbeddedServeError as exc:
        fail(EXIT_NOT_COMPLETED, str(exc))


@app.command()
def worker(
    pool: Annotated[str, typer.Option(help="The work pool whose deployments' flow runs to take.")] = "dsr-pool",
    limit: Annotated[int, typer.Option(min=1, help="Flow runs at once.")] = 4,
) -> None:
    """A warm worker of a work pool on the Prefect server at PREFECT_API_URL: each flow run of the
    pool's deployments in a thread of this process, with no process start per run. Stops on
    Ctrl-C/SIGTERM once its runs in flight end. `prefect worker start --pool` workers may share the pool."""
    from prefect.settings import PREFECT_API_URL

    from flows.warm import run_pool_worker

    if not PREFECT_API_URL.value():  # the environment's or the Prefect profile's
        fail(EXIT_BAD_INPUT, "PREFECT_API_URL: set it to the Prefect server the pool is on")

    logging.getLogger("flows.warm").setLevel(logging.INFO)  # a line per claimed run
    code = run_pool_worker(pool, parallel_runs=limit)
    if code:
        fail(EXIT_NOT_COMPLETED, f"the warm worker of pool {pool} stopped (exit {code}); see its log")


@app.command()
def demo(
    serve_after: Annotated[bool, typer.Option("--serve", help="Afterwards keep the sandboxes and `dsr serve` running: "
                                              "the officer console and the privacy center, with a ready officer "
                                              "token (Ctrl-C stops).")] = False,
    port: Annotated[int, typer.Option(help="Port for --serve.")] = 8080,
) -> None:
    """Seed the demo CRM, then submit, verify and run an erasure and an access request; ends with a
    retention purge that deletes the demo systems' expired records."""
    from doors.demo import run_demo, serve_after_demo
    from dsr.settings import packaged_default

    demo_map = Path("config/demo/systems.yaml")  # a checkout's; else the one shipped in the package
    os.environ.setdefault("DSR_SYSTEMS_FILE", str(demo_map if demo_map.is_file() else packaged_default("demo/systems.yaml")))
    with open_service(creates_home=True) as service:
        keep_serving = (lambda: serve_after_demo(service, out, serve_app, port=port)) if serve_after else None
        code = run_demo(service, out, run_with_progress, serve=keep_serving)
    raise typer.Exit(code)
