"""`python -m deployments setup [--gpu-slots N]`: create pools, deploy everything (idempotent)."""

from __future__ import annotations

import argparse

from deployments.setup import setup


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m deployments")
    commands = parser.add_subparsers(dest="command", required=True)
    setup_cmd = commands.add_parser("setup", help="create work pools and deploy every flow")
    setup_cmd.add_argument("--gpu-slots", type=int, default=1, help="tasks that may run at once")
    args = parser.parse_args()
    if args.command == "setup":
        setup(gpu_slots=args.gpu_slots)
        print(f"Work pools and deployments are set up ({args.gpu_slots} GPU slot(s)).")


if __name__ == "__main__":
    main()
