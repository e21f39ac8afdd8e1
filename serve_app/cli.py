"""`stemscribe` command line: offline model setup and a one-command local start."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from serve_app.domain.api_keys import ApiKeys

logger = logging.getLogger("stemscribe")


def _make_test_model(args: argparse.Namespace) -> int:
    from music.engines.demucs_models import write_random_htdemucs

    path = write_random_htdemucs(Path(args.folder), name=args.name, seed=args.seed, full_size=args.full_size)
    logger.info(
        "Wrote %s. Use it with STEMSCRIBE_DEMUCS_MODEL=%s STEMSCRIBE_DEMUCS_MODEL_DIR=%s "
        "(random weights: the stems are noise-like, the pipeline is real).",
        path, args.name, Path(args.folder).resolve(),
    )  # fmt: skip
    return 0


def _keys() -> ApiKeys:
    from serve_app.domain.api_keys import ApiKeys
    from serve_app.domain.db import JobRepository
    from serve_app.settings import Settings

    repo = JobRepository(Settings().database_url.get_secret_value())
    repo.migrate()
    return ApiKeys(repo)


def _create_key(args: argparse.Namespace) -> int:
    row, key = _keys().create(args.name, operator=args.operator)
    # The key itself goes to stdout, once; it is not stored anywhere and cannot be shown again.
    sys.stdout.write(f"{key}\n")
    role = "an operator's key" if row.operator else "key"
    logger.info("created %s %s (%s…) named %r; keep it now, it cannot be shown again", role, row.id, row.prefix, row.name)
    return 0


def _list_keys(args: argparse.Namespace) -> int:
    for row in _keys().repo.keys():
        state = f"revoked {row.revoked_at:%Y-%m-%d %H:%M}" if row.revoked_at else "active"
        role = "operator" if row.operator else "client"
        sys.stdout.write(f"{row.id}  {row.prefix}…  {state:<24}  {role:<8}  {row.name}\n")
    return 0


def _revoke_key(args: argparse.Namespace) -> int:
    if _keys().repo.revoke_key(args.key_id):
        logger.info("revoked key %s", args.key_id)
        return 0
    logger.error("no active key with id %s", args.key_id)
    return 1


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] not in (["make-test-model"], ["keys"]):
        # Everything else (transcribe, jobs, serve, --help) is the client's command line (stemscribe_client).
        from stemscribe_client.cli import main as client_main

        return client_main(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("alembic").setLevel(logging.WARNING)
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

    keys = commands.add_parser("keys", help="API keys in the database named by DATABASE_URL").add_subparsers(
        dest="keys_command", required=True
    )
    create = keys.add_parser("create", help="create a key and print it (once)")
    create.add_argument("name", help="who or what the key is for")
    create.add_argument("--operator", action="store_true", help="an operator's key: may also read /api/v1/health/details")
    create.set_defaults(handler=_create_key)
    keys.add_parser("list", help="list keys (never the keys themselves)").set_defaults(handler=_list_keys)
    revoke = keys.add_parser("revoke", help="revoke a key by its id")
    revoke.add_argument("key_id")
    revoke.set_defaults(handler=_revoke_key)
    args = parser.parse_args(argv)
    return int(args.handler(args))


if __name__ == "__main__":
    sys.exit(main())
