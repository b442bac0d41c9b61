"""The ``nightshift`` command. Service commands (run, web, scheduler, worker) start processes;
user commands (submit, status, results, run-now) talk to the API like any other client."""

from __future__ import annotations

import argparse
import logging
import sys
import time
from datetime import datetime
from pathlib import Path

from pydantic import ValidationError
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from nightshift.client import ApiError, Client
from nightshift.morning import add_commands
from nightshift.weights import add_command as add_weights_command
from scheduler.settings import get_settings

console = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)


# --- services -----------------------------------------------------------------------------------


def cmd_run(_args: argparse.Namespace) -> int:
    from nightshift.launcher import run_all

    return run_all(get_settings())


def cmd_web(_args: argparse.Namespace) -> int:
    import uvicorn

    from web import create_app

    settings = get_settings()
    uvicorn.run(create_app(settings), host=settings.api_host, port=settings.api_port)
    return 0


def cmd_scheduler(_args: argparse.Namespace) -> int:
    from scheduler.service import run_scheduler

    run_scheduler(get_settings())
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    from workers import run_worker

    run_worker(get_settings(), loglevel=args.loglevel)
    return 0


def cmd_make_model(args: argparse.Namespace) -> int:
    from workers.tiny_model import TinyModelShape, make_tiny_model

    shape = TinyModelShape(hidden_size=args.hidden, num_layers=args.layers,
                           num_heads=args.hidden // 64, intermediate_size=args.hidden * 2)
    console.print(f"model written to {make_tiny_model(args.directory, shape)}")
    return 0


# --- user commands --------------------------------------------------------------------------


def _client() -> Client:
    settings = get_settings()
    token_file = settings.data_dir / "api-token"
    token = settings.api_token or (token_file.read_text().strip() if token_file.is_file() else "")
    return Client(settings.api_url, token)


def cmd_submit_batch(args: argparse.Namespace) -> int:
    path: Path = args.file
    if not path.is_file():
        err.print(f"[red]file: {path} does not exist or is not a file[/red]")
        return 2
    size, limit = path.stat().st_size, get_settings().max_batch_bytes
    if size > limit:
        err.print(f"[red]file: {path} is {size} bytes; the limit is {limit} bytes "
                  "(NIGHTSHIFT_MAX_BATCH_BYTES). Split it into several batches.[/red]")
        return 2
    form = {"model": args.model, "priority": args.priority, "owner": args.owner,
            "title": args.title or path.name}
    if args.deadline:
        form["deadline"] = args.deadline
    with console.status(f"uploading {path.name} ({size} bytes)"):
        receipt = _client().submit_batch(path, path.read_bytes(), form)
    console.print(f"queued task [bold]{receipt['task_id']}[/bold]: {receipt['accepted']} requests")
    for line in receipt["rejected"]:
        err.print(f"rejected {line['message']}", style="yellow", markup=False)
    return 0


def cmd_submit_todo(args: argparse.Namespace) -> int:
    path: Path = args.file
    if not path.is_file():
        err.print(f"file: {path} does not exist or is not a file", style="red", markup=False)
        return 2
    body = {"repo": args.repo, "model": args.model, "text": path.read_text(errors="replace"),
            "priority": args.priority, "owner": args.owner, "deadline": args.deadline}
    receipt = _client().submit_todo(body)
    for warning in receipt["warnings"]:
        err.print(f"note: {warning}", style="yellow", markup=False)
    ids = receipt["task_ids"]
    console.print(f"queued {len(ids)} item(s) as tasks {ids[0]}-{ids[-1]} from commit {receipt['base'][:10]}")
    return 0


def cmd_repo_add(args: argparse.Namespace) -> int:
    body = {"name": args.name, "source": args.source, "test_command": args.test_command,
            "setup_command": args.setup_command}
    with console.status(f"registering {args.source}"):
        repo = _client().add_repository(body)
    console.print(f"registered {repo['name']}: {repo['path']} (tests: {repo['test_command']})")
    return 0


def cmd_repo_list(_args: argparse.Namespace) -> int:
    table = Table("name", "path", "test command", "setup command", title="repositories")
    for repo in _client().repositories():
        table.add_row(repo["name"], repo["path"], repo["test_command"], repo["setup_command"] or "-")
    console.print(table)
    return 0


def cmd_status(_args: argparse.Namespace) -> int:
    client = _client()
    status, tasks = client.status(), client.tasks(limit=20)
    queue = ", ".join(f"{k} {v}" for k, v in status["queue"].items() if v)
    console.print(f"queue: {queue or 'empty'}")
    console.print(f"window: {_window_line(status)}", markup=False)
    workers = Table("worker", "state", "model", "task", "heartbeat (UTC)", title="workers")
    for w in status["workers"]:
        state = w["state"] + (f" ({w['state_reason']})" if w.get("state_reason") else "")
        workers.add_row(w["name"], state, w["resident_model"] or "-",
                        str(w["current_task_id"] or "-"), w["heartbeat_at"][11:19])
    console.print(workers)
    table = Table("id", "kind", "model", "status", "progress", "attempts", "title", title="tasks")
    for t in tasks:
        table.add_row(str(t["id"]), t["kind"], t["model"], t["status"],
                      f"{t['progress_done']}/{t['progress_total']}", str(t["attempts"]), t["title"])
    console.print(table)
    return 0


def _wait_for(client: Client, task_id: int) -> dict:
    with Progress(TextColumn("task {task.fields[tid]}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                  TextColumn("{task.fields[state]}"), TimeElapsedColumn(), console=err) as bar:
        row = client.task(task_id)
        job = bar.add_task("", total=row["progress_total"], tid=task_id, state=row["status"])
        while row["status"] not in ("succeeded", "failed", "cancelled"):
            time.sleep(1)
            row = client.task(task_id)
            bar.update(job, completed=row["progress_done"], state=row["status"])
    return row


def _download(client: Client, task_id: int, kind: str, target: Path) -> int:
    count = 0
    with client.stream_lines(task_id, kind) as response, target.open("wb") as out, Progress(
        TextColumn(f"{kind} -> {target}"), DownloadColumn(), console=err, transient=True
    ) as bar:
        job = bar.add_task("", total=None)
        for chunk in response.iter_bytes():
            out.write(chunk)
            count += chunk.count(b"\n")
            bar.advance(job, len(chunk))
    return count


def cmd_results(args: argparse.Namespace) -> int:
    client = _client()
    row = _wait_for(client, args.task_id) if args.wait else client.task(args.task_id)
    if row["status"] not in ("succeeded", "failed"):
        err.print(f"[yellow]task {args.task_id} is {row['status']} "
                  f"({row['progress_done']}/{row['progress_total']}); writing what is done so far[/yellow]")
    errors_path = args.errors or args.output.with_name(args.output.stem + ".errors.jsonl")
    ok = _download(client, args.task_id, "output", args.output)
    bad = _download(client, args.task_id, "errors", errors_path)
    console.print(f"{ok} results -> {args.output}; {bad} errors -> {errors_path}")
    if row["status"] == "failed":
        err.print(f"[red]task failed: {row['error']}[/red]")
        return 1
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    """One task: its state, and for a patch task the verdict, the branch and the chosen diff."""
    from rich.syntax import Syntax

    task = _client().task(args.task_id)
    console.print(f"task {task['id']} ({task['kind']}, {task['model']}): {task['status']}, "
                  f"attempt {task['attempts']}/{task['max_attempts']}; {task['title']}", markup=False)
    if task["error"]:
        err.print(f"error: {task['error']}", style="red", markup=False)
    result = task.get("result") or {}
    if task["kind"] == "patch" and result:
        console.print(f"verdict: {result['verdict']} ({result['reason']})", markup=False)
        console.print(f"branch: {result.get('branch') or '-'}; engine calls {result['engine_calls']}, "
                      f"tokens {result['tokens_in']}+{result['tokens_out']}, "
                      f"model {result['model_s']:.1f}s, tests {result['tests_s']:.1f}s", markup=False)
        if result.get("chosen") is not None:
            diff = result["candidates"][result["chosen"]]["diff"]
            console.print(Syntax(diff, "diff", theme="ansi_dark", word_wrap=True))
    return 0


def _window_line(status: dict) -> str:
    if status.get("always_open"):
        return "always open (always_open = true)"
    opened = [f"{w['scope']} open until {w['closes_at'][:16]} UTC ({w['reason']})"
              for w in status.get("windows", [])]
    return "; ".join(opened) or "closed (nightshift run-now opens it)"


def cmd_run_now(args: argparse.Namespace) -> int:
    reply = _client().run_now(args.duration)
    if reply.get("window"):
        console.print(f"window open until {reply['window']['closes_at'][:16]} UTC", markup=False)
    sent = reply["dispatched"]
    console.print(f"dispatched {len(sent)} task(s): {sent}" if sent else "nothing queued to dispatch")
    return 0


def cmd_password(args: argparse.Namespace) -> int:
    """Set (or reset) the login's password directly in the database, for first start without a
    browser at hand or a forgotten password."""
    import getpass

    from web.auth import set_password

    password = getpass.getpass("new password: ")
    if password != getpass.getpass("again: "):
        err.print("the two passwords differ", style="red")
        return 1
    try:
        set_password(get_settings(), args.username, password)
    except ValueError as exc:
        err.print(str(exc), style="red", markup=False)
        return 1
    console.print(f"password set for {args.username}")
    return 0


# --- parser ---------------------------------------------------------------------------------


def _deadline(text: str) -> str:
    try:
        datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an ISO time such as 2026-11-23T07:00+01:00")
    return text


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nightshift", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("run", help="start web, scheduler and one worker").set_defaults(func=cmd_run)
    sub.add_parser("web", help="start the web API").set_defaults(func=cmd_web)
    sub.add_parser("scheduler", help="start the scheduler").set_defaults(func=cmd_scheduler)
    worker = sub.add_parser("worker", help="start one worker (one per GPU)")
    worker.add_argument("--loglevel", default="INFO")
    worker.set_defaults(func=cmd_worker)

    submit = sub.add_parser("submit", help="queue work").add_subparsers(dest="kind", required=True)
    batch = submit.add_parser("batch", help="an OpenAI Batch file (JSONL)")
    batch.add_argument("file", type=Path)
    batch.add_argument("--model", required=True, help="a model alias from the configuration")
    batch.add_argument("--priority", type=int, default=0)
    batch.add_argument("--owner", default="local")
    batch.add_argument("--deadline", type=_deadline, help="ISO time with zone: ready by")
    batch.add_argument("--title", default="")
    batch.set_defaults(func=cmd_submit_batch)
    todo = submit.add_parser("todo", help="a TODO list for a registered repository")
    todo.add_argument("file", type=Path)
    todo.add_argument("--repo", required=True, help="a repository name (nightshift repo list)")
    todo.add_argument("--model", required=True, help="a model alias from the configuration")
    todo.add_argument("--priority", type=int, default=0)
    todo.add_argument("--owner", default="local")
    todo.add_argument("--deadline", type=_deadline, help="ISO time with zone: ready by")
    todo.set_defaults(func=cmd_submit_todo)

    repo = sub.add_parser("repo", help="repositories for TODO lists").add_subparsers(dest="action", required=True)
    add = repo.add_parser("add", help="register a local repository or clone a git URL")
    add.add_argument("name")
    add.add_argument("source", help="a local path or a git URL")
    add.add_argument("--test-command", help="default: detected (pytest, npm, cargo, go, make)")
    add.add_argument("--setup-command", help="run once in each fresh worktree before the tests")
    add.set_defaults(func=cmd_repo_add)
    repo.add_parser("list", help="registered repositories").set_defaults(func=cmd_repo_list)

    sub.add_parser("status", help="queue and workers").set_defaults(func=cmd_status)
    results = sub.add_parser("results", help="download a batch's results")
    results.add_argument("task_id", type=int)
    results.add_argument("-o", "--output", type=Path, required=True)
    results.add_argument("--errors", type=Path, help="default: OUTPUT with .errors.jsonl")
    results.add_argument("--wait", action="store_true", help="wait for the task to finish")
    results.set_defaults(func=cmd_results)
    run_now = sub.add_parser("run-now", help="open the night window now and dispatch queued work")
    run_now.add_argument("--for", dest="duration", help="how long, e.g. 90m or 2h "
                         "(default: until the next scheduled close)")
    run_now.set_defaults(func=cmd_run_now)
    show = sub.add_parser("show", help="one task; for a patch: verdict, branch and diff")
    show.add_argument("task_id", type=int)
    show.set_defaults(func=cmd_show)

    add_commands(sub, lambda command: lambda args: command(_client(), args))
    password = sub.add_parser("password", help="set the web login's password (on the server)")
    password.add_argument("--username", default="admin")
    password.set_defaults(func=cmd_password)

    make = sub.add_parser("make-model", help="write a random Llama model (tests, benchmarks)")
    make.add_argument("directory", type=Path)
    make.add_argument("--hidden", type=int, default=128)
    make.add_argument("--layers", type=int, default=2)
    make.set_defaults(func=cmd_make_model)
    add_weights_command(sub)  # serve-weights (nightshift/weights.py, issue 5)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    try:
        return args.func(args)
    except ApiError as exc:
        err.print(str(exc), style="red", markup=False)
        return 1
    except ValidationError as exc:  # the settings (nightshift.toml or NIGHTSHIFT_*) are wrong
        err.print(settings_problem(exc), style="red", markup=False)
        return 2


def settings_problem(exc: ValidationError) -> str:
    lines = [f"  {'.'.join(str(p) for p in e['loc']) or 'settings'}: {e['msg'].removeprefix('Value error, ')}"
             for e in exc.errors()]
    return "nightshift: the settings are not usable (nightshift.toml or NIGHTSHIFT_* variables):\n" + "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
