"""The command line (``run_benchmark.py``), in the style of lm-evaluation-harness.

With no subcommand it runs the benchmark (train + evaluate + submit)::

    run_benchmark.py --method rice --dataset lpr4m-synth --profile tiny --seed 0

The subcommands are declared once, in :data:`benchmark.cli.commands.COMMANDS`. Mistakes a user
can make (an unknown name, a bad ``--set``, broken data, an unreadable submission) end with one
``error:`` line on stderr and a non-zero exit status (2 for usage errors, 1 otherwise), never a
stack trace; set ``LPR_BENCH_TRACEBACK=1`` to see the trace anyway.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Optional, Sequence

from benchmark.cli.args import UsageError, message, refuse_removed_settings
from benchmark.cli.commands import COMMANDS
from benchmark.core.registry import RegistryError

SUBCOMMANDS = tuple(c.name for c in COMMANDS)


def build_parser(selected: Optional[str] = None) -> argparse.ArgumentParser:
    """The parser; a command's lazy arguments are added only when it is ``selected``."""
    parser = argparse.ArgumentParser(
        prog="run_benchmark.py",
        description="LPR-Bench: train and evaluate a livestream product recognition method under one protocol.",
        epilog="subcommands: "
        + " | ".join(f"{n} (default)" if n == "run" else n for n in SUBCOMMANDS)
        + "; `run_benchmark.py SUBCOMMAND -h` for each",
    )
    sub = parser.add_subparsers(dest="command", metavar="SUBCOMMAND")
    for cmd in COMMANDS:
        p = sub.add_parser(cmd.name, help=cmd.help)
        if cmd.eager or cmd.name == selected:
            cmd.arguments(p)
    return parser


def _user_errors() -> tuple[type[BaseException], ...]:
    """Exceptions that mean bad input or environment, reported as one line. Imported when an
    error happens, not before: most of them live in modules that load torch."""
    from benchmark.cli.run_setup import MethodBuildError
    from benchmark.core.atomic import WriteError
    from benchmark.evaluation.evaluate import EvaluationError
    from benchmark.evaluation.external_inputs import ExternalInputError
    from benchmark.record.reproduce import ReproduceError
    from benchmark.record.run_identity import IdentityError
    from benchmark.record.submission import SubmissionError
    from benchmark.record.trec import TrecExportError
    from benchmark.training.checkpoint import CheckpointError
    from benchmark.training.distributed import DeviceError
    from benchmark.training.engine import TrainingError
    from datasets.errors import DataError
    from methods.encoders import EncoderLoadError

    return (
        WriteError,
        CheckpointError,
        DeviceError,
        TrainingError,
        EvaluationError,
        DataError,
        EncoderLoadError,
        SubmissionError,
        MethodBuildError,
        IdentityError,
        ReproduceError,
        ExternalInputError,
        TrecExportError,
    )


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Parse ``argv`` (default ``sys.argv[1:]``), dispatch, and return the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] not in SUBCOMMANDS and argv[0] not in ("-h", "--help"):
        argv = ["run", *argv]
    elif not argv:
        build_parser().print_help()
        return 2
    traceback = bool(os.environ.get("LPR_BENCH_TRACEBACK"))
    handlers = {c.name: c.handler for c in COMMANDS}
    try:
        refuse_removed_settings()
        args = build_parser(selected=argv[0]).parse_args(argv)
        if args.command is None:
            build_parser().print_help()
            return 2
        return handlers[args.command](args)
    except (RegistryError, UsageError) as exc:
        if traceback:
            raise
        print(f"error: {message(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        if traceback or not isinstance(exc, _user_errors()):
            raise
        print(f"error: {message(exc)}", file=sys.stderr)
        return 1
