"""The queue's command line.

python -m deployments setup [--gpus 0,1 | --gpu-slots N]
                                              create work pools, deploy everything (idempotent)
python -m deployments serve [--gpus 0,1 | --gpu-slots N] [--port 4200] [--api-port 8765]
                            [--restart-delay 1] [--logs .stack-logs] [--profile embedded|cluster]
                            [--role all|control|gpu]
                                              run the stack in the foreground until Ctrl-C,
                                              restarting what dies (exits 1 if it gives up);
                                              --role gpu: only this host's GPU side, against
                                              PREFECT_API_URL and DB_URL (README "Scaling out")
python -m deployments demo                    start the stack, run the demo pipeline, stop
python -m deployments notify-test             send a test message through each configured channel
python -m deployments reap --token T          (internal: the stack's reaper, see process_tree.py)
"""

from __future__ import annotations

import _thread
import argparse
import contextlib
import signal
import sys
import threading
from pathlib import Path


def main() -> int:
    parser = argparse.ArgumentParser(
        prog="python -m deployments",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True)
    for name, text in (
        ("setup", "create work pools and deploy every flow"),
        ("serve", "run the stack until Ctrl-C"),
        ("demo", "run the demo pipeline through the queue"),
    ):
        command = commands.add_parser(name, help=text)
        command.add_argument(
            "--gpu-slots",
            type=int,
            default=None,
            help="tasks that may run at once, on GPUs 0..N-1 (default: as set before)",
        )
        command.add_argument(
            "--gpus",
            default=None,
            help="the GPUs to serve, e.g. 0,1 (0+1,2+3: two slots of two GPUs each): one worker "
            "(and model host) per slot, kept for later starts without the option (default: as "
            "set before; GPU 0 for a new set-up)",
        )
        if name == "serve":
            # Left out unless given, for Stack's defaults: importing them here would cost the
            # reaper (`reap`, below) Prefect's import.
            unset = argparse.SUPPRESS
            command.add_argument(
                "--port", type=int, default=unset, help="the Prefect server's port (UI, API)"
            )
            command.add_argument(
                "--api-port", type=int, default=unset, help="the /queue REST API's port"
            )
            command.add_argument(
                "--restart-delay",
                type=float,
                default=unset,
                help="seconds before a dead process is restarted; doubles while it keeps dying",
            )
            command.add_argument(
                "--logs", type=Path, default=unset, help="where each process logs (.stack-logs)"
            )
            command.add_argument(
                "--profile",
                choices=("embedded", "cluster"),
                default=unset,
                help="embedded: one Prefect server on SQLite; cluster: Prefect on PostgreSQL "
                "and Redis, several API processes (default: STACK_PROFILE, else embedded)",
            )
            command.add_argument(
                "--role",
                choices=("all", "control", "gpu"),  # deployments.stack.ROLES
                default=unset,
                help="all: the whole queue on this machine (default); control: all but the GPU "
                "side (server, manager, /queue API); gpu: only the GPU worker, warm starter and "
                "model hosts, against PREFECT_API_URL and DB_URL; --gpu-slots: this host's GPUs",
            )
    commands.add_parser("notify-test", help="send a test message through each channel")
    reaper = commands.add_parser("reap", help="internal: kill a stack's leftovers once it is gone")
    reaper.add_argument("--token", required=True, help="the stack's BIASBENCH_STACK token")
    args = parser.parse_args()
    gpus: list[str] | None = None
    if getattr(args, "gpus", None) is not None:
        if args.gpu_slots is not None:
            parser.error("give either --gpus or --gpu-slots")
        gpus = [part.strip() for part in args.gpus.split(",")]
        if any(not g for g in gpus) or len(set(gpus)) != len(gpus):
            parser.error(f"--gpus wants distinct GPU ids separated by commas, not {args.gpus!r}")

    if args.command == "setup":
        from deployments.setup import setup

        done = setup(gpu_slots=args.gpu_slots, gpus=gpus)
        print(
            f"Work pools and deployments are set up ({done.gpu_slots} GPU slot(s): "
            f"GPU {', '.join(done.gpus)})."
        )
        on = done.channels
        print(f"Messages go to: {', '.join(on)}." if on else "Messages are only logged.")
        return 0
    if args.command == "notify-test":
        import asyncio

        from deployments.notifications import send_test_message
        from deployments.settings import DeploymentSettings

        return 1 if asyncio.run(send_test_message(DeploymentSettings())) else 0

    if args.command == "reap":
        from deployments.process_tree import reap

        reap(args.token)
        return 0

    from deployments.stack import Stack

    # Ctrl-C and SIGTERM both end the foreground wait, and so does a process that keeps dying;
    # the stack then stops every child.
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    if args.command == "demo":
        from deployments.demo import use_demo_catalogue
        from deployments.setup import PROJECT_DIR

        use_demo_catalogue(PROJECT_DIR / ".stack-logs")
        # The demo submits in-process; only `serve` offers the /queue API to other clients.
        with Stack(
            gpu_slots=args.gpu_slots,
            gpus=gpus,
            api_port=None,
            on_give_up=lambda _: _thread.interrupt_main(),
        ) as stack:
            from deployments.demo import run_demo

            try:
                return run_demo(stack.ui_url)
            except KeyboardInterrupt:
                if stack.failure is None:
                    raise
        print(f"The queue stopped: {stack.failure}", file=sys.stderr)
        return 1
    given = ("port", "api_port", "restart_delay", "logs", "profile", "role")
    options = {k: v for k, v in vars(args).items() if k in given}
    try:
        stack = Stack(
            gpu_slots=args.gpu_slots, gpus=gpus, **options, on_give_up=lambda _: stopping.set()
        )
    except ValueError as exc:  # a setting that cannot work, e.g. --role gpu without a server
        parser.error(str(exc))
    with stack:
        if stack.role == "gpu":
            said = f"GPU side running ({stack.gpu_slots} slot(s)) against {stack.api_url}"
        else:
            said = (
                f"Queue running ({stack.profile}, {stack.role}): Prefect UI at {stack.ui_url}, "
                f"/queue API at http://127.0.0.1:{stack.api_port}/queue"
            )
        print(f"{said}, logs in {stack.logs}. Ctrl-C stops it.", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            stopping.wait()
        print("Stopping the queue ...", flush=True)
    if stack.failure is not None:
        print(f"The queue stopped: {stack.failure}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
