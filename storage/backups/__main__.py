"""`python -m storage.backups --config node.yaml --job ID [--target T]`: one backup job, run by backups.run."""

from __future__ import annotations

import argparse
import logging
import sys

from storage.config.settings import ConfigError, load_config
from storage.index.database import Index

from .layout import BackupError
from .runner import run_backup


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m storage.backups", description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True)
    parser.add_argument("--job", type=int, required=True)
    parser.add_argument("--target")
    args = parser.parse_args(argv)
    try:
        config = load_config(args.config)
    except ConfigError as err:
        print(f"backup: {err}", file=sys.stderr)
        return 2
    logging.basicConfig(
        filename=config.node_dir / "node.log" if (config.node_dir / "node.log").exists() else None,
        level=config.log_level,
        format="%(asctime)s %(levelname)s backup[%(process)d] %(name)s: %(message)s",
    )
    index = Index(config.index)
    try:
        run_backup(config, index, args.target, job_id=args.job)
    except BackupError as err:
        logging.getLogger("storage.backups").error("backup job %d failed: %s", args.job, err)
        return 1
    finally:
        index.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
