"""owl: the open-weights workbench.

Store models, adapters, quantized variants and datasets by content, with lineage and licenses;
convert, run and export them. Listings and reports take --json.

\b
Examples:
  owl import ./SmolLM2-135M-Instruct.Q4_1.gguf --name smollm2
  owl ls
  owl show smollm2
  owl convert smollm2 --to hf
  owl run smollm2-hf "What is the capital of France?" --chat
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path
from typing import Annotated

import typer

from owlkit.cli.help import OwlGroup
from owlkit.errors import OwlError
from owlkit.version import __version__

app = typer.Typer(
    name="owl",
    cls=OwlGroup,
    help=__doc__,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)

_debug = False


def _version(value: bool) -> None:
    if value:
        print(f"owl {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    home: Annotated[
        Path | None, typer.Option("--home", help="Store location (default: $OWL_HOME or the user data dir).")
    ] = None,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks for errors.")] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    global _debug
    _debug = debug
    if debug:
        warnings.resetwarnings()
    from owlkit.cli import state

    state.home = home  # every run sets it: tests call main() many times in one process


# Each module of owlkit.cli registering commands, with the commands it adds, in `owl --help` order.
# A command's run imports only its own module: importing all fourteen cost ~70 ms of every command.
COMMAND_MODULES: dict[str, tuple[str, ...]] = {
    "store_cmds": ("import", "ls", "show", "verify", "tag", "rm", "gc", "export", "upgrade"),
    "model_cmds": ("convert", "run"),
    "tune_cmds": ("tune",),
    "data_cmds": ("data",),
    "merge_cmds": ("merge",),
    "merge_adapters_cmds": ("merge-adapters",),
    "eval_cmds": ("eval",),
    "quantize_cmds": ("quantize",),
    "openness_cmds": ("openness", "attach"),
    "terms_cmds": ("licenses", "terms"),
    "serve_cmds": ("serve",),
    "chat_cmds": ("chat",),
    "rebuild_cmds": ("rebuild",),
    "diff_cmds": ("diff",),
    "scan_cmds": ("scan",),
}
_registered: set[str] = set()


def register_commands(command: str | None = None) -> None:
    """Add the module of ``command`` (every module when None or unknown), each once per process: tests
    call main() thousands of times in one process, and registering again made every later call slower."""
    import importlib

    from owlkit.cli.help import use_conventional_help

    wanted = [m for m, names in COMMAND_MODULES.items() if command in names] or list(COMMAND_MODULES)
    for module in wanted:
        if module not in _registered:
            importlib.import_module(f"owlkit.cli.{module}").register(app)
            _registered.add(module)
    order = {name: i for i, name in enumerate(n for names in COMMAND_MODULES.values() for n in names)}
    app.registered_commands.sort(key=lambda c: order.get(c.name or "", len(order)))
    app.registered_groups.sort(key=lambda g: order.get(g.name or "", len(order)))
    use_conventional_help(app)


def _command_word(argv: list[str]) -> str | None:
    """The command an argument list runs: the first word that is not a root option (or its value)."""
    args = iter(argv)
    for arg in args:
        if arg == "--home":
            next(args, None)
        elif not arg.startswith("-"):
            return arg
    return None


def main(argv: list[str] | None = None) -> None:
    """Entry point: runs the app, turning every OwlError into one red line and its exit code."""
    from owlkit.api import quiet_library_logs

    quiet_library_logs()
    # Libraries' deprecation chatter (torch.jit, transformers' checkpointing API) is for their callers,
    # not for owl users; --debug shows it again.
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    register_commands(_command_word(sys.argv[1:] if argv is None else argv))
    try:
        # Outside standalone mode, click returns a typer.Exit's code instead of raising it (`owl terms`
        # exits 10 / 11 / 12 for its verdicts).
        code = app(args=argv, standalone_mode=False)
    except OwlError as e:
        _fail(e, e.exit_code)
    except KeyboardInterrupt:
        _fail(None, 130)
    except OSError as e:  # the file system said no: a user's path or disk, not a bug
        from owlkit.errors import FileSystemError

        where = f"{e.filename}: " if e.filename else ""
        _fail(FileSystemError(f"{where}{e.strerror or e}; check the path, its permissions and free space"), 9)
    except typer.Exit as e:
        sys.exit(e.exit_code)
    except typer.Abort:
        _fail(None, 130)
    except Exception as e:
        # Usage errors (Typer's own click classes, or click's) print themselves and carry exit code 2.
        if isinstance(e, typer.TyperException | _click_exception()) and isinstance(
            getattr(e, "exit_code", None), int
        ):
            e.show()
            sys.exit(e.exit_code)
        if _debug:
            raise
        _fail(e, 1, internal=True)
    sys.exit(code if isinstance(code, int) else 0)


def _click_exception() -> type[Exception]:
    try:
        import click
    except ImportError:  # Typer vendors its own click; the standalone package may be absent
        return typer.TyperException
    return click.ClickException


def _fail(e: BaseException | None, code: int, *, internal: bool = False) -> None:
    from owlkit.cli.render import err_console

    if _debug and e is not None:
        import traceback

        traceback.print_exception(e)
    if e is None:
        err_console.print("[red]interrupted[/red]")
    else:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        if internal:
            msg = f"internal error ({type(e).__name__}): {msg} — re-run with --debug and report it"
        from rich.markup import escape

        err_console.print(f"[red]error:[/red] {escape(msg)}", soft_wrap=True)
    sys.exit(code)


if __name__ == "__main__":
    main()
