"""The morning from the command line: the review list, accept, reject, requeue, the night
report, and API tokens. Every command goes through the same API as the pages."""

from __future__ import annotations

import argparse
from datetime import date, datetime, timedelta
from pathlib import Path

from rich.console import Console
from rich.table import Table

from nightshift.client import Client

console = Console()


def _last_night() -> str:
    now = datetime.now().astimezone()
    return (now.date() if now.hour >= 12 else now.date() - timedelta(days=1)).isoformat()


def cmd_review(client: Client, args: argparse.Namespace) -> int:
    page = client.review(args.night, args.state, args.limit)
    table = Table(title=f"{page['total']} finished" + (f" on the night of {page['night']}" if page["night"] else ""))
    for column in ("task", "what", "verdict", "review"):
        table.add_column(column)
    for item in page["items"]:
        table.add_row(str(item["id"]), item["title"] or item["kind"], f"{item['verdict']}: {item['reason'][:80]}",
                      item["review"])
    console.print(table)
    return 0


def cmd_accept(client: Client, args: argparse.Namespace) -> int:
    if args.download:
        args.download.write_text(client.patch(args.task_id))
        console.print(f"patch of task {args.task_id} -> {args.download}")
        return 0
    merged = client.accept(args.task_id, args.into)
    console.print(f"merged {merged['branch']} into {merged['into']} ({merged['commit'][:10]})", markup=False)
    return 0


def cmd_reject(client: Client, args: argparse.Namespace) -> int:
    client.reject(args.task_id, args.note)
    console.print(f"task {args.task_id} rejected")
    return 0


def cmd_requeue(client: Client, args: argparse.Namespace) -> int:
    new = client.requeue(args.task_id, args.note)
    console.print(f"task {args.task_id} requeued as task {new['task_id']}")
    return 0


def cmd_report(client: Client, args: argparse.Namespace) -> int:
    r = client.night_report(args.night or _last_night())
    rate = f"{r['tokens_per_s']:.1f} tokens/s" if r["tokens_per_s"] else "no tokens"
    console.print(f"night of {r['night']}: {r['tasks_finished']} tasks finished in {r['attempts']} attempts on "
                  f"{len(r['workers'])} worker(s); {r['worker_hours']:.2f} worker-hours, {r['tokens_out']} tokens "
                  f"generated, {rate} while busy. Energy: {r['energy']}.", markup=False)
    return 0


def cmd_token(client: Client, args: argparse.Namespace) -> int:
    created = client.create_token(args.name)
    console.print(f"token {created['name']!r} (shown once): {created['token']}", markup=False)
    return 0


def _night(text: str) -> str:
    try:
        return date.fromisoformat(text).isoformat()
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date such as 2026-11-21") from None


def add_commands(sub: argparse._SubParsersAction, run) -> None:
    """Register the morning's commands; ``run`` wraps each with the CLI's API client."""
    review = sub.add_parser("review", help="what finished (one night, newest first)")
    review.add_argument("--night", type=_night, help="YYYY-MM-DD (noon to noon); default: the latest")
    review.add_argument("--state", choices=["pending", "accepted", "rejected", "requeued"])
    review.add_argument("--limit", type=int, default=50)
    review.set_defaults(func=run(cmd_review))
    accept = sub.add_parser("accept", help="merge a TODO item's branch into a branch you name")
    accept.add_argument("task_id", type=int)
    accept.add_argument("--into", default="main", help="the branch to merge into (created if missing)")
    accept.add_argument("--download", type=Path, help="write the patch to this file instead of merging")
    accept.set_defaults(func=run(cmd_accept))
    reject = sub.add_parser("reject", help="reject an item (its branch is kept)")
    reject.add_argument("task_id", type=int)
    reject.add_argument("--note", default="")
    reject.set_defaults(func=run(cmd_reject))
    requeue = sub.add_parser("requeue", help="queue an item again with a note for the next night")
    requeue.add_argument("task_id", type=int)
    requeue.add_argument("--note", required=True)
    requeue.set_defaults(func=run(cmd_requeue))
    report = sub.add_parser("report", help="the night report")
    report.add_argument("night", nargs="?", type=_night, help="YYYY-MM-DD; default: last night")
    report.set_defaults(func=run(cmd_report))
    token = sub.add_parser("token", help="create an API token for another machine or a script")
    token.add_argument("name")
    token.set_defaults(func=run(cmd_token))
