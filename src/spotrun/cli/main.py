"""``spotrun``: submit, follow, inspect and stop training jobs; run the server; manage keys."""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from spotrun.api.logs import LOG_FORMAT_ENV, LOG_FORMATS, log_format
from spotrun.cli import catalog as catalog_cli
from spotrun.cli import render
from spotrun.cli import simulate as simulate_cli
from spotrun.cli import tune as tune_cli
from spotrun.cli.client import (
    Client,
    credentials,
    service_info,
    start_service,
    stop_service,
)
from spotrun.dburl import shown_url
from spotrun.errors import ServiceError, SpecError, SpotrunError
from spotrun.images import PROCESSES_ENV
from spotrun.settings import Settings, load_settings, with_database, write_settings
from spotrun.spec import (
    COMPUTE_TAG,
    DEADLINE_TAG,
    MIN_COUNT_TAG,
    OVERHEAD_TAG,
    POLICY_NAMES,
    POLICY_TAG,
    POOLS_TAG,
    RETRY_ON_SCRIPT_FAILURE_TAG,
    lifecycle,
)

TERMINAL = ("Completed", "Failed", "Stopped")
DEFAULT_MAX_RUN = 86_400  # seconds: SageMaker's default MaxRuntimeInSeconds
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")


def parse_duration(text: str, field: str) -> int:
    """'90', '90s', '30m', '2h', '1d' → seconds."""
    m = _DURATION.match(text)
    if not m:
        raise SpecError(field, f"{text!r} is not a duration; use e.g. 90s, 30m, 2h or 1d")
    value = round(float(m.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)])
    if value < 1:
        raise SpecError(field, f"{text!r} is shorter than the smallest limit, 1s")
    return value


def _pairs(items: Sequence[str], field: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items:
        if "=" not in item:
            raise SpecError(field, f"{item!r} must look like name=value")
        k, v = item.split("=", 1)
        out[k.strip()] = v
    return out


def _to_uri(value: str) -> str:
    if "://" in value:
        return value
    return Path(value).expanduser().resolve().as_uri()


def _stopping_condition(max_run: str | None, max_wait: str | None, spot: bool) -> dict[str, int]:
    """MaxRuntimeInSeconds and MaxWaitTimeInSeconds from ``--max-run``/``--max-wait``.

    A spot job's wait includes its run, so the wait can never be shorter. With ``--spot``
    the limit given stands in for the one left out (so ``--spot --max-wait 1h`` alone is a
    valid job, not a one-day runtime refused for exceeding the hour); neither means a day.
    """
    run = parse_duration(max_run, "--max-run") if max_run else None
    wait = parse_duration(max_wait, "--max-wait") if max_wait else None
    if not spot:
        stopping = {"MaxRuntimeInSeconds": DEFAULT_MAX_RUN if run is None else run}
        if wait is not None:
            stopping["MaxWaitTimeInSeconds"] = wait
        return stopping
    if run is not None and wait is not None and wait < run:
        raise SpecError(
            "--max-wait",
            f"{max_wait} is shorter than --max-run {max_run}; a spot job's wait includes its "
            f"run time, so give --max-wait {max_run} or more, or a shorter --max-run",
        )
    if run is None:
        run = DEFAULT_MAX_RUN if wait is None else wait
    return {"MaxRuntimeInSeconds": run, "MaxWaitTimeInSeconds": run if wait is None else wait}


def build_request(args: argparse.Namespace, settings: Settings) -> dict[str, Any]:
    """A CreateTrainingJob request from ``spotrun run``'s arguments."""
    script = Path(args.script).expanduser()
    source = Path(args.source_dir).expanduser().resolve() if args.source_dir else None
    if source is None:
        source = script.resolve().parent
        entry = script.name
    else:
        entry = (
            str(script) if not script.is_absolute() else str(script.resolve().relative_to(source))
        )
    stamp = time.strftime("%Y%m%d-%H%M%S")
    name = args.name or re.sub(r"[^a-zA-Z0-9-]+", "-", f"{Path(entry).stem}-{stamp}").strip("-")
    stopping = _stopping_condition(args.max_run, args.max_wait, bool(args.spot))
    channels = [
        {
            "ChannelName": k,
            "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": _to_uri(v)}},
        }
        for k, v in _pairs(args.channel, "--channel").items()
    ]
    output = _to_uri(args.output) if args.output else (settings.home / "output").as_uri()
    req: dict[str, Any] = {
        "TrainingJobName": name,
        "AlgorithmSpecification": {
            "TrainingInputMode": "File",
            "SourceDir": str(source),
            "EntryPoint": entry,
        },
        "HyperParameters": _pairs(args.hp, "--hp"),
        "OutputDataConfig": {"S3OutputPath": output},
        "ResourceConfig": {
            "InstanceType": args.instance_type,
            "InstanceCount": args.count[1],
            "VolumeSizeInGB": 30,
        },
        "StoppingCondition": stopping,
        "EnableManagedSpotTraining": bool(args.spot),
        "Environment": _pairs(args.env, "--env"),
    }
    if args.processes_per_host is not None:
        # the server checks the value (1-64, a .py script, one instance) and names the field
        req["Environment"][PROCESSES_ENV] = str(args.processes_per_host)
    if channels:
        req["InputDataConfig"] = channels
    if args.spot or args.checkpoint:
        ckpt = args.checkpoint or (settings.home / "checkpoints" / name).as_uri()
        req["CheckpointConfig"] = {"S3Uri": _to_uri(ckpt), "LocalPath": "/opt/ml/checkpoints"}
    if args.retries:
        req["RetryStrategy"] = {"MaximumRetryAttempts": args.retries}
    tags: list[dict[str, str]] = []
    if args.retry_on_script_failure:
        if not args.retries:
            # the server refuses the tag without a RetryStrategy too; say it in flag terms
            raise SpecError(
                "--retry-on-script-failure",
                "makes --retries cover failures of the training script too, and --retries "
                "is not given; add --retries N (1-30), or leave the flag out",
            )
        tags.append({"Key": RETRY_ON_SCRIPT_FAILURE_TAG, "Value": "true"})
    if args.count[0] != args.count[1]:
        tags.append({"Key": MIN_COUNT_TAG, "Value": str(args.count[0])})
    # spotrun's scheduling travels as tags, as through boto3; the server checks the values
    for key, value in (
        (POLICY_TAG, args.policy),
        (DEADLINE_TAG, args.deadline),
        (COMPUTE_TAG, args.compute),
        (OVERHEAD_TAG, args.restart_overhead),
        (POOLS_TAG, " ".join(p.strip() for arg in args.pool for p in arg.split(",")) or None),
    ):
        if value is not None:
            tags.append({"Key": key, "Value": value})
    if tags:
        req["Tags"] = tags
    return req


def instance_counts(text: str) -> tuple[int, int]:
    """``--count``: ``N`` instances, or an elastic range ``LOW..HIGH`` (the server checks
    the values, and names the field it refuses)."""
    low, sep, high = text.partition("..")
    try:
        return int(low), int(high if sep else low)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a count: give N, or LOW..HIGH for an elastic job (2..4)"
        ) from None


def follow(client: Client, name: str, show_logs: bool = True) -> dict[str, Any]:
    """Print status transitions and log lines until the job ends; returns the last describe.

    Each poll's new transitions go among its new lines by time (the lines keep the log's
    order), so the job's last lines come before its final status, not after it.
    """
    seen_transitions = 0
    last_message = ""
    quiet_since = time.monotonic()
    after = 0
    while True:
        d = client.describe(name)
        trans = d.get("SecondaryStatusTransitions", [])
        new = [
            (t["StartTime"], f"[spotrun] {render.transition_line(t)}")
            for t in trans[seen_transitions:]
        ]
        message = trans[-1]["StatusMessage"] if trans else ""
        note = None  # what the current status is doing, said after this poll's events
        if new:
            quiet_since = time.monotonic()
        elif trans and message != last_message:
            note = f"[spotrun]   … {message}"
            quiet_since = time.monotonic()
        elif time.monotonic() - quiet_since >= 15 and d["SecondaryStatus"] != "Training":
            waited = time.time() - trans[-1]["StartTime"] if trans else 0.0
            note = f"[spotrun]   … still {d['SecondaryStatus']} ({waited:.0f} s)"
            quiet_since = time.monotonic()
        seen_transitions = len(trans)
        last_message = message
        lines: list[tuple[float, str]] = []
        if show_logs:
            # read after the describe: a job seen ended has all its lines stored by now
            while True:
                chunk = client.logs(name, after=after)
                lines += [
                    (ln["time"], f"[{ln['host']}#{ln['generation']}] {ln['line']}")
                    for ln in chunk["lines"]
                ]
                after = chunk["next"]
                if len(chunk["lines"]) < 1000:
                    break
        for text in _merge(new, lines):
            print(text, flush=True)
        if note is not None:
            print(note, flush=True)
        if d["TrainingJobStatus"] in TERMINAL:
            return d
        time.sleep(1.0)


def _merge(transitions: list[tuple[float, str]], lines: list[tuple[float, str]]) -> list[str]:
    """Lines in their log order, each transition before the first line logged after it."""
    out: list[str] = []
    i = 0
    for at, text in lines:
        while i < len(transitions) and transitions[i][0] <= at:
            out.append(transitions[i][1])
            i += 1
        out.append(text)
    return out + [text for _, text in transitions[i:]]


def cmd_run(args: argparse.Namespace, settings: Settings) -> int:
    req = build_request(args, settings)
    client = Client.for_settings(settings)
    if args.dry_run:
        forecast = client.forecast(req)
        print(json.dumps(forecast, indent=2) if args.json else render.forecast(forecast))
        return 0
    arn = client.submit(req)
    name = req["TrainingJobName"]
    print(f"[spotrun] submitted {name} ({arn})", flush=True)
    if args.detach:
        print(f"[spotrun] follow it with: spotrun logs -f {name}")
        return 0
    try:
        d = follow(client, name)
    except KeyboardInterrupt:
        print(
            f"\n[spotrun] detached; {name} keeps running. Reattach with `spotrun logs -f {name}`,"
            f" stop it with `spotrun stop {name}`.",
            file=sys.stderr,
        )
        return 130
    print()
    print(render.summary(d))
    return 0 if d["TrainingJobStatus"] == "Completed" else 1


def cmd_jobs(args: argparse.Namespace, settings: Settings) -> int:
    filters = {
        "status": args.status,
        "name_contains": args.name_contains,
        "sort_by": args.sort,
        "sort_order": "Descending" if args.desc else "Ascending",
    }
    rows = Client.for_settings(settings).jobs(**{k: v for k, v in filters.items() if v})
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        print(render.jobs_table(rows))
    return 0


def cmd_describe(args: argparse.Namespace, settings: Settings) -> int:
    d = Client.for_settings(settings).describe(args.name)
    print(json.dumps(d, indent=2) if args.json else render.summary(d))
    return 0


def cmd_metrics(args: argparse.Namespace, settings: Settings) -> int:
    series = Client.for_settings(settings).metrics(args.name)
    if args.json:
        print(json.dumps(series, indent=2))
        return 0
    if not series:
        print(f"{args.name}: no metric points (MetricDefinitions matched no log line)")
        return 0
    print(f"{'METRIC':<30} {'POINTS':>7} {'LAST':>12} {'MIN':>12} {'MAX':>12}")
    for name, points in sorted(series.items()):
        values = [p["value"] for p in points]
        print(
            f"{name:<30} {len(values):>7} {values[-1]:>12.6g} {min(values):>12.6g} "
            f"{max(values):>12.6g}"
        )
    return 0


def cmd_logs(args: argparse.Namespace, settings: Settings) -> int:
    client = Client.for_settings(settings)
    if args.follow:
        try:
            d = follow(client, args.name)
        except KeyboardInterrupt:
            return 130
        print(f"[spotrun] {args.name}: {d['TrainingJobStatus']} / {d['SecondaryStatus']}")
        return 0
    after = 0
    while True:
        chunk = client.logs(args.name, after=after)
        for ln in chunk["lines"]:
            print(f"[{ln['host']}#{ln['generation']}] {ln['line']}")
        if not chunk["lines"]:
            return 0
        after = chunk["next"]


def cmd_stop(args: argparse.Namespace, settings: Settings) -> int:
    client = Client.for_settings(settings)
    client.stop(args.name)
    print(f"[spotrun] stopping {args.name}")
    if args.wait:
        d = follow(client, args.name, show_logs=False)
        print(f"[spotrun] {args.name}: {d['TrainingJobStatus']} / {d['SecondaryStatus']}")
    return 0


def cmd_interrupt(args: argparse.Namespace, settings: Settings) -> int:
    client = Client.for_settings(settings)
    result = client.interrupt(args.name, args.lead, args.host)
    ids = ", ".join(result["instances"])
    left = max(0.0, float(result["deadline"]) - time.time())
    print(f"[spotrun] {args.name}: notice served on {ids}; reclaimed in {left:.0f} s")
    if args.wait:
        # the answer to "does it resume?" is whether the job still completes
        d = follow(client, args.name, show_logs=False)
        print(f"[spotrun] {args.name}: {d['TrainingJobStatus']} / {d['SecondaryStatus']}")
        return 0 if d["TrainingJobStatus"] == "Completed" else 1
    return 0


def cmd_server(args: argparse.Namespace, settings: Settings) -> int:
    slurm = _slurm_settings(args, settings)
    if args.market or args.stop_grace is not None or args.isolation or slurm:
        market = str(Path(args.market).resolve()) if args.market else None
        write_settings(
            settings.home,
            market=market,
            stop_grace_seconds=args.stop_grace,
            isolation=args.isolation,
            **slurm,
        )
        settings = load_settings(settings.home)
    settings = with_database(settings, args.database)
    if args.action is None:
        # the foreground server, for deployment (systemd, a container, a terminal)
        from spotrun.api.server import serve

        if service_info(settings) is not None:
            raise ServiceError(
                f"a spotrun server for {settings.home} is already running; "
                "`spotrun server stop` stops it"
            )
        return serve(settings, args.host, args.port, log_format(args.log_format))
    if args.action == "start":
        if args.log_format:  # the background server reads it from its environment
            os.environ[LOG_FORMAT_ENV] = args.log_format
        log_format(None)  # a bad SPOTRUN_LOG_FORMAT is refused here, not in service.log
        started = start_service(settings, quiet=True, host=args.host, port=args.port)
        print(f"spotrun server running: pid {started['pid']}, {_url(started)}")
        return 0
    if args.action == "status":
        info = service_info(settings)
        if info is None:
            print(
                f"spotrun server: not running (home {settings.home}, "
                f"database {shown_url(settings.store_url)})"
            )
            return 3
        database = info.get("database", "?")
        print(
            f"spotrun server: running, pid {info['pid']}, {_url(info)}, home {settings.home}, "
            f"database {database}"
        )
        for server in Client(_url(info), *credentials(settings)).servers():
            role = "leader (runs the controller)" if server["Leader"] else "standby"
            print(f"  {server['Url']}  pid {server['Pid']} on {server['Hostname']}  {role}")
        return 0
    stopped = stop_service(settings)
    print("spotrun server stopped" if stopped else "spotrun server was not running")
    return 0


def _slurm_settings(args: argparse.Namespace, settings: Settings) -> dict[str, object]:
    """The provider flags of ``spotrun server``, as settings to write to config.toml."""
    out: dict[str, object] = {}
    if args.provider:
        out["provider"] = args.provider
    if args.partition:
        out["slurm_partition"] = args.partition
    if args.ondemand_partition:
        out["slurm_ondemand_partition"] = args.ondemand_partition
    if args.slurm_conf:
        out["slurm_conf"] = str(Path(args.slurm_conf).resolve())
    if args.slurm_price:
        prices = dict(settings.slurm_prices)
        for item in args.slurm_price:
            partition, _, price = item.partition("=")
            prices[partition.strip()] = _price(item, partition, price)
        out["slurm_prices"] = prices
    return out


def _price(item: str, partition: str, price: str) -> float:
    try:
        value = float(price)
    except ValueError:
        value = -1.0
    if not partition.strip() or not value >= 0:
        raise SpecError("--slurm-price", f"{item!r} is not PARTITION=PRICE (USD per hour, >= 0)")
    return value


def _url(info: dict[str, Any]) -> str:
    return f"http://{info['host']}:{info['port']}"


def cmd_console(args: argparse.Namespace, settings: Settings) -> int:
    client = Client.for_settings(settings)
    link = client.console_link()
    minutes = int(link["expiresInSeconds"]) // 60
    print(f"Open the console (this link logs in once, within {minutes} minutes):")
    print(f"  {client.base}{link['path']}")
    print(f"Later logins: {client.base}/console/login with an access key.")
    return 0


def cmd_keys(args: argparse.Namespace, settings: Settings) -> int:
    client = Client.for_settings(settings)
    if args.action == "create":
        k = client.create_key(args.account, args.description or "")
        print(f"access key id:     {k['accessKeyId']}")
        print(f"secret access key: {k['secretAccessKey']}")
        print(f"account:           {k['account']} ({k['accountId']})")
        print("The secret is shown only now; keep it somewhere safe.")
        return 0
    if args.action == "list":
        keys = client.keys()
        if args.json:
            print(json.dumps(keys, indent=2))
            return 0
        print(f"{'ACCESS KEY ID':<22} {'ACCOUNT':<14} {'CREATED':<20} {'STATE':<8} DESCRIPTION")
        for k in keys:
            created = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(k["createdAt"]))
            state = "revoked" if k["revokedAt"] else "active"
            account = k.get("account") or k["accountId"]
            print(
                f"{k['accessKeyId']:<22} {account:<14} {created:<20} {state:<8} {k['description']}"
            )
        return 0
    if args.action == "revoke":
        if not args.key:
            raise SpecError("key", "give the access key id to revoke")
        client.revoke_key(args.key)
        print(f"revoked {args.key}")
        return 0
    # env: what boto3 and the SageMaker SDK need to talk to this server
    access, secret = client.credentials
    print(f"export AWS_ACCESS_KEY_ID={access}")
    print(f"export AWS_SECRET_ACCESS_KEY={secret}")
    print("export AWS_DEFAULT_REGION=us-east-1")
    print(f"export AWS_ENDPOINT_URL_SAGEMAKER={client.base}")
    print(f"export AWS_ENDPOINT_URL_CLOUDWATCH_LOGS={client.base}")
    return 0


def cmd_images(args: argparse.Namespace, settings: Settings) -> int:
    client = Client.for_settings(settings)
    if args.action == "list":
        rows = client.images()
        if args.json:
            print(json.dumps(rows, indent=2))
            return 0
        for r in rows:
            what = {
                "script": f"{r.get('source_dir')} :: {r.get('entry_point')}",
                "script-mode": "script mode (the SDK's sagemaker_program)",
                "algorithm": f"built-in algorithm {r.get('algorithm')}",
            }[r["kind"]]
            print(f"{r['pattern']:<60} {what}   [{r['source']}]")
        return 0
    if not args.pattern:
        raise SpecError("pattern", "give the image URI (or glob) to map")
    if args.action == "remove":
        client.remove_image(args.pattern)
        print(f"removed the mapping for {args.pattern}")
        return 0
    source_dir = str(Path(args.source_dir).resolve()) if args.source_dir else None
    entry = client.add_image(
        pattern=args.pattern,
        source_dir=source_dir,
        entry_point=args.entry_point,
        script_mode=args.script_mode,
        algorithm=args.algorithm,
    )
    print(f"{args.pattern} -> {entry.get('kind')} (used from the next submission on)")
    return 0


def cmd_lifecycle(args: argparse.Namespace, settings: Settings) -> int:
    if args.dot:
        print(lifecycle.dot())
        return 0
    for src, dsts in lifecycle.ALLOWED.items():
        nxt = ", ".join(sorted(dsts)) or "(terminal)"
        print(f"{src:<20} [{lifecycle.PRIMARY[src]}] -> {nxt}")
    return 0


def add_job_arguments(r: argparse.ArgumentParser) -> None:
    """The flags that define a training job, after the script and ``--name`` (``run``'s,
    and ``tune``'s for its trials; ``build_request`` reads them)."""
    r.add_argument("--source-dir", help="folder shipped with the script (default: its folder)")
    r.add_argument("--spot", action="store_true", help="use managed spot training")
    r.add_argument("--instance-type", default="ml.m5.xlarge")
    r.add_argument(
        "--count",
        type=instance_counts,
        default=(1, 1),
        metavar="N|LOW..HIGH",
        help="instance count; LOW..HIGH makes the job elastic: it runs on what capacity "
        "gives in that range, goes on with fewer after a loss and grows back",
    )
    r.add_argument(
        "--processes-per-host",
        type=int,
        metavar="N",
        help="run the script as N data-parallel ranks under torchrun (see spotrun.toolkit."
        "distributed)",
    )
    r.add_argument(
        "--max-run",
        help="MaxRuntimeInSeconds, e.g. 30m (default: 1d; with --spot, the max wait if given)",
    )
    r.add_argument(
        "--max-wait",
        help="MaxWaitTimeInSeconds: with --spot, the most the job may take, waits for capacity "
        "included, e.g. 1h (default with --spot: the max run)",
    )
    r.add_argument("--hp", action="append", default=[], metavar="NAME=VALUE")
    r.add_argument("--channel", action="append", default=[], metavar="NAME=URI")
    r.add_argument("--env", action="append", default=[], metavar="NAME=VALUE")
    r.add_argument("--checkpoint", help="checkpoint URI (default: under $SPOTRUN_HOME)")
    r.add_argument("--output", help="S3OutputPath (default: under $SPOTRUN_HOME)")
    r.add_argument(
        "--retries",
        type=int,
        default=0,
        metavar="N",
        help="RetryStrategy.MaximumRetryAttempts (1-30): retry a job that failed with an "
        "internal error (a lost instance, a crashed agent) up to N times, as SageMaker does; "
        "spot interruptions never count",
    )
    r.add_argument(
        "--retry-on-script-failure",
        action="store_true",
        help="with --retries: also retry when the training script itself fails (exits "
        "non-zero), which SageMaker does not (tag spotrun:retry-on-script-failure=true)",
    )
    r.add_argument(
        "--policy",
        choices=POLICY_NAMES,
        help="with --spot: how to meet the deadline (default spot-only, SageMaker's: wait "
        "for spot up to the max wait); greedy, uniform-progress and spotrun fall back to "
        "on-demand when the deadline demands it",
    )
    r.add_argument(
        "--deadline",
        metavar="DURATION",
        help="with --policy: finish within this long of submission, e.g. 52h (default: "
        "the max wait)",
    )
    r.add_argument(
        "--compute",
        metavar="DURATION",
        help="with --policy: how long the job computes uninterrupted, e.g. 48h (default: "
        "the max run)",
    )
    r.add_argument(
        "--restart-overhead",
        metavar="DURATION",
        help="with --policy: how long an attempt takes from launch to training, e.g. 3m "
        "(default: measured from the job's own attempts)",
    )
    r.add_argument(
        "--pool",
        action="append",
        default=[],
        metavar="ml.TYPE[@ZONE]|@ZONE",
        help="other capacity the job may fail over to (repeat, or separate with commas)",
    )


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="spotrun", description="Managed spot training.")
    p.add_argument("--home", help="state folder (default $SPOTRUN_HOME or ~/.spotrun)")
    sub = p.add_subparsers(dest="command", required=True)

    r = sub.add_parser("run", help="submit a training script and follow it")
    r.add_argument("script", help="the entry point (a Python script)")
    r.add_argument("--name", help="job name (default: <script>-<time>)")
    add_job_arguments(r)
    r.add_argument(
        "--dry-run",
        action="store_true",
        help="submit nothing: print the expected cost, on-demand cost and finish time in "
        "the current market, from the simulator",
    )
    r.add_argument("--json", action="store_true", help="with --dry-run: the forecast as JSON")
    r.add_argument("--detach", "-d", action="store_true", help="submit and return")
    r.set_defaults(fn=cmd_run)

    j = sub.add_parser("jobs", help="list training jobs")
    j.add_argument("--json", action="store_true")
    j.add_argument("--status", choices=["InProgress", "Completed", "Failed", "Stopping", "Stopped"])
    j.add_argument("--name-contains", metavar="TEXT", help="case-insensitive")
    j.add_argument("--sort", choices=["CreationTime", "Name", "Status"], default="CreationTime")
    j.add_argument("--desc", action="store_true", help="newest (or last) first")
    j.set_defaults(fn=cmd_jobs)

    d = sub.add_parser("describe", help="show one job")
    d.add_argument("name")
    d.add_argument("--json", action="store_true", help="DescribeTrainingJob's shape")
    d.set_defaults(fn=cmd_describe)

    me = sub.add_parser("metrics", help="a job's metrics (from its MetricDefinitions)")
    me.add_argument("name")
    me.add_argument("--json", action="store_true", help="every point")
    me.set_defaults(fn=cmd_metrics)

    lg = sub.add_parser("logs", help="print a job's log")
    lg.add_argument("name")
    lg.add_argument("-f", "--follow", action="store_true")
    lg.set_defaults(fn=cmd_logs)

    s = sub.add_parser("stop", help="stop a job (SIGTERM, grace, SIGKILL; the model is kept)")
    s.add_argument("name")
    s.add_argument("--wait", action="store_true")
    s.set_defaults(fn=cmd_stop)

    it = sub.add_parser(
        "interrupt",
        help="reclaim a job's spot instances after a notice, to see that it resumes",
    )
    it.add_argument("name")
    it.add_argument(
        "--lead",
        type=float,
        default=None,
        metavar="SECONDS",
        help="seconds from the notice to the reclaim, 0-120 (default: the market's lead)",
    )
    it.add_argument(
        "--host",
        metavar="algo-N",
        help="reclaim only this host's instance (the whole job still checkpoints and resumes)",
    )
    it.add_argument(
        "--wait",
        action="store_true",
        help="follow the job until it ends; exit 0 only if it completes",
    )
    it.set_defaults(fn=cmd_interrupt)

    sv = sub.add_parser(
        "server",
        help="the server (APIs + controller); no action runs it in the foreground",
    )
    sv.add_argument("action", nargs="?", choices=["start", "status", "stop"])
    sv.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    sv.add_argument("--port", type=int, help="port (default: a free one)")
    sv.add_argument("--market", help="market description file (TOML or JSON)")
    sv.add_argument("--stop-grace", type=float, help="seconds between SIGTERM and SIGKILL")
    sv.add_argument("--isolation", choices=["auto", "namespace", "folder"])
    sv.add_argument(
        "--provider",
        choices=["local", "slurm"],
        help="where instances come from: local processes (default) or Slurm jobs "
        "(SPOTRUN_PROVIDER; `provider` in config.toml)",
    )
    sv.add_argument(
        "--partition", help="the preemptible Slurm partition for spot jobs (default spot)"
    )
    sv.add_argument(
        "--ondemand-partition",
        help="a Slurm partition that is never preempted, for jobs without managed spot",
    )
    sv.add_argument(
        "--slurm-price",
        action="append",
        metavar="PARTITION=PRICE",
        help="USD per node-hour of a Slurm partition (repeatable; `slurm_prices` in config.toml)",
    )
    sv.add_argument("--slurm-conf", help="the Slurm cluster's slurm.conf (default: SLURM_CONF)")
    sv.add_argument(
        "--database",
        help="database URL, e.g. postgresql://USER:PASSWORD@HOST/DB (default: SQLite in the "
        "home; also SPOTRUN_DATABASE_URL or `database_url` in config.toml)",
    )
    sv.add_argument(
        "--log-format",
        choices=LOG_FORMATS,
        help="text (default) or json: one JSON object per log line (SPOTRUN_LOG_FORMAT)",
    )
    sv.set_defaults(fn=cmd_server)

    im = sub.add_parser("images", help="what each TrainingImage runs (no container engine)")
    im.add_argument("action", choices=["list", "add", "remove"])
    im.add_argument("pattern", nargs="?", help="image URI or glob (add, remove)")
    im.add_argument("--source-dir", help="folder holding the script baked into the image")
    im.add_argument("--entry-point", help="the script inside --source-dir")
    im.add_argument("--script-mode", action="store_true", help="run the SDK's sagemaker_program")
    im.add_argument("--algorithm", help="a built-in algorithm name")
    im.add_argument("--json", action="store_true", help="machine-readable list")
    im.set_defaults(fn=cmd_images)

    k = sub.add_parser("keys", help="access keys for the APIs (SigV4)")
    k.add_argument("action", choices=["create", "list", "revoke", "env"])
    k.add_argument("key", nargs="?", help="the access key id (revoke)")
    k.add_argument("--account", help="account name (create; default: your own)")
    k.add_argument("--description", help="a note on what the key is for (create)")
    k.add_argument("--json", action="store_true", help="machine-readable list")
    k.set_defaults(fn=cmd_keys)

    co = sub.add_parser("console", help="print a one-time link that logs into the web console")
    co.set_defaults(fn=cmd_console)

    lc = sub.add_parser("lifecycle", help="print the job lifecycle table")
    lc.add_argument("--dot", action="store_true", help="as a Graphviz graph")
    lc.set_defaults(fn=cmd_lifecycle)

    catalog_cli.register(sub)
    simulate_cli.add_parser(sub)
    tune_cli.add_parser(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        settings = load_settings(Path(args.home) if args.home else None)
        code: int = args.fn(args, settings)
        return code
    except SpotrunError as e:
        print(f"spotrun: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
