"""What every `dsr` command shares: the Typer apps, the output consoles, exit codes, and the
service session that turns known failures into a message and an exit code."""

from __future__ import annotations

import dataclasses
import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any, NoReturn

import typer
from pydantic import ValidationError
from rich.console import Console

from connectors.base import ConnectorConfigError
from doors.opendsr_client import app as opendsr_app
from dsr.config import ConfigError
from dsr.deadlines import DeadlineError
from dsr.identity import IdentityError
from dsr.ledger.events import ChainError
from dsr.ledger.store import LedgerError, SchemaOutOfDate, UnknownRequest
from dsr.models import RequestInputError
from dsr.service import DsrService, RequestStateError
from dsr.settings import HomeMissing, Settings

EXIT_NOT_COMPLETED = 1
EXIT_BAD_INPUT = 2
EXIT_REFUSED = 3


app = typer.Typer(no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Carry out data-subject requests: submit, verify, run, and prove it.")
bundle_app = typer.Typer(no_args_is_help=True, help="Evidence bundles: verify and export.")
db_app = typer.Typer(no_args_is_help=True, help="The ledger's schema: upgrade it (a release step) and show it.")
ledger_app = typer.Typer(no_args_is_help=True, help="The ledger: verify hash chains.")
token_app = typer.Typer(no_args_is_help=True, help="API tokens for officers and auditors.")
task_app = typer.Typer(no_args_is_help=True, help="Manual tasks: steps a person does in systems without an API.")
hold_app = typer.Typer(no_args_is_help=True, help="Legal holds: a subject's data the purge must keep.")
restriction_app = typer.Typer(no_args_is_help=True, help="Restrictions (GDPR 18): lift one.")
app.add_typer(hold_app, name="hold")
app.add_typer(restriction_app, name="restriction")
app.add_typer(task_app, name="task")
app.add_typer(bundle_app, name="bundle")
app.add_typer(ledger_app, name="ledger")
app.add_typer(token_app, name="token")
app.add_typer(opendsr_app, name="opendsr")
app.add_typer(db_app, name="db")


#: A request's id, as most commands take it.
RequestId = Annotated[str, typer.Argument(metavar="ID")]
#: `--json` where the machine-readable output needs no further word.
AsJson = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]


def _version(show: bool) -> None:
    if show:
        from importlib.metadata import PackageNotFoundError, version

        try:
            out.print(f"dsr-pipeline {version('dsr-pipeline')}")
        except PackageNotFoundError:  # run from a checkout that was never installed
            from dsr import __version__

            out.print(f"dsr-pipeline {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    show_version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                               help="Print the version and exit.")] = False,
) -> None:
    """Carry out data-subject requests: submit, verify, run, and prove it."""

# Piped output keeps whole ids and dates: 80 columns (Rich's default off a terminal) would cut them.
out = Console(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True, highlight=False, soft_wrap=True)


def fail(code: int, message: str) -> NoReturn:
    err.print(f"[red]error:[/red] {message}")
    raise typer.Exit(code)


# The environment prefix of each settings model whose validation errors are configuration problems.
_ENV_PREFIXES = {"Settings": "DSR_", "StorageConfig": "DSR_STORAGE_"}


def config_problem(exc: BaseException) -> str | None:
    """The message for a configuration problem (bad input, exit 2), or None for anything else.

    A setting that is missing or wrong is the operator's to fix, never an "internal error": a data map
    or policy entry, a connector's settings (the environment variables they name), a key file, or a
    DSR_* variable (named, without its value: it may be a secret).
    """
    if isinstance(exc, ConfigError | ConnectorConfigError):
        return str(exc)
    from dsr.signing import SigningKeyError  # cryptography is heavy: only when something failed

    if isinstance(exc, SigningKeyError):
        return str(exc)
    if isinstance(exc, ValidationError) and exc.title in _ENV_PREFIXES:
        first = exc.errors(include_input=False, include_url=False)[0]
        message = first["msg"].removeprefix("Value error, ")
        if not first["loc"]:  # a rule across fields: its message names them
            return f"{_ENV_PREFIXES[exc.title]}* settings: {message}"
        return f"{_ENV_PREFIXES[exc.title]}{'_'.join(str(p) for p in first['loc']).upper()}: {message}"
    return None


@contextmanager
def open_service(*, creates_home: bool = False) -> Iterator[DsrService]:
    """Open the service and turn every known failure into a clear message and exit code.

    `creates_home`: this command may make the state directory (`dsr demo`); others refuse to
    start one in a directory nobody chose (Settings.require_home).
    """
    service: DsrService | None = None
    try:
        settings = Settings()
        if not creates_home:
            settings.require_home()
        service = DsrService(settings)
        yield service
    except (RequestInputError, IdentityError, DeadlineError, ConfigError, HomeMissing, SchemaOutOfDate) as exc:
        fail(EXIT_BAD_INPUT, str(exc))
    except ConnectorConfigError as exc:
        where = f" (data map: {service.settings.systems_path})" if service is not None else ""
        fail(EXIT_BAD_INPUT, f"{exc}{where}")
    except UnknownRequest as exc:
        fail(EXIT_BAD_INPUT, str(exc))
    except RequestStateError as exc:
        fail(EXIT_REFUSED, str(exc))
    except (LedgerError, ChainError) as exc:
        fail(EXIT_NOT_COMPLETED, str(exc))
    except Exception as exc:
        problem = config_problem(exc)
        if problem is None:
            raise
        fail(EXIT_BAD_INPUT, problem)
    finally:
        if service is not None:
            service.close()


def print_json(value: Any) -> None:
    out.print_json(json.dumps(value, default=str))


def record_fields(record: Any) -> dict[str, Any]:
    """A record of the ledger's (an index row, a hold: slotted dataclasses) as a dict for `--json`."""
    return {field.name: getattr(record, field.name) for field in dataclasses.fields(record)}
