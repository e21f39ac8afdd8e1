"""`stemscribe` command line: offline model setup and a one-command local start."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

logger = logging.getLogger("stemscribe")


def _make_test_model(args: argparse.Namespace) -> int:
    from deployments.demucs_models import write_random_htdemucs

    path = write_random_htdemucs(Path(args.folder), name=args.name, seed=args.seed, full_size=args.full_size)
    logger.info(
        "Wrote %s. Use it with STEMSCRIBE_DEMUCS_MODEL=%s STEMSCRIBE_DEMUCS_MODEL_DIR=%s "
        "(random weights: the stems are noise-like, the pipeline is real).",
        path, args.name, Path(args.folder).resolve(),
    )  # fmt: skip
    return 0


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    parser = argparse.ArgumentParser(prog="stemscribe", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    make = commands.add_parser(
        "make-test-model", help="write a small HTDemucs with random weights into a local model folder"
    )
    make.add_argument("folder", help="model folder, e.g. ./models")
    make.add_argument("--name", default="htdemucs_test", help="model name (file <name>.th)")
    make.add_argument("--seed", type=int, default=0)
    make.add_argument("--full-size", action="store_true", help="the pretrained htdemucs' architecture (slow)")
    make.set_defaults(handler=_make_test_model)
    args = parser.parse_args(argv)
    return int(args.handler(args))


if __name__ == "__main__":
    sys.exit(main())
