"""A Bayesian tuning job on spot, at full size: the xgboost built-in over eta, max_depth and
subsample on scikit-learn's digits, 12 trials, 3 at a time, with spot instances reclaimed
under running trials.

Prints what the search found against XGBoost's defaults on the same data, every trial
(its hyperparameters, objective, interruptions and the round it resumed from), and the
money: cost, on-demand cost and savings over all trials. Targets: the best trial at least
as good as the defaults, no interrupted trial started again from round 0, savings > 0.

    .venv/bin/python bench/tuning.py [--trials 12] [--parallel 3] [--reclaims 4] [--json]
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import boto3
import numpy as np
from botocore.config import Config
from sklearn.datasets import load_digits

from spotrun.cli.client import Client, credentials, start_service, stop_service
from spotrun.errors import SpotrunError
from spotrun.settings import load_settings, write_settings

MARKET = """
time_scale = 1
notice_lead_seconds = 2
[[pools]]
instance_type = "c5.xlarge"
process = "always"
"""
ROUND = re.compile(r"^\[(\d+)\]\t")
RESUMED = re.compile(r"resumed from round (\d+)")
STATIC = {
    "num_round": "60",
    "objective": "multi:softmax",
    "num_class": "10",
    "eval_metric": "merror",
}


def channels(root: Path) -> list[dict[str, Any]]:
    x, y = load_digits(return_X_y=True)
    order = np.random.default_rng(0).permutation(len(y))
    out = []
    for channel, rows in (("train", order[:1200]), ("validation", order[1200:])):
        folder = root / "digits" / channel
        folder.mkdir(parents=True)
        np.savetxt(
            folder / "data.csv", np.column_stack([y[rows], x[rows]]), delimiter=",", fmt="%g"
        )
        out.append(
            {
                "ChannelName": channel,
                "ContentType": "text/csv",
                "DataSource": {
                    "S3DataSource": {
                        "S3DataType": "S3Prefix",
                        "S3Uri": folder.as_uri(),
                        "S3DataDistributionType": "FullyReplicated",
                    }
                },
            }
        )
    return out


def log(rest: Client, job: str) -> list[str]:
    lines: list[str] = []
    after = 0
    while True:
        page = rest.logs(job, after=after)
        if not page["lines"]:
            return lines
        lines += [e["line"] for e in page["lines"]]
        after = page["next"]


def reclaim(
    rest: Client, sm: Any, tuning: str, count: int, done: list[str], stop: threading.Event
) -> None:
    """Reclaim the instances of ``count`` trials, each after it trained 5 rounds."""
    while not stop.is_set() and len(done) < count:
        running = sm.list_training_jobs_for_hyper_parameter_tuning_job(
            HyperParameterTuningJobName=tuning, StatusEquals="InProgress", MaxResults=100
        )["TrainingJobSummaries"]
        for t in running:
            name = t["TrainingJobName"]
            if name in done or sum(bool(ROUND.match(ln)) for ln in log(rest, name)) < 5:
                continue
            try:
                rest.interrupt(name, 2.0)
                done.append(name)
            except SpotrunError:
                pass  # between attempts, or ended meanwhile
            break
        stop.wait(0.3)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--trials", type=int, default=12)
    ap.add_argument("--parallel", type=int, default=3)
    ap.add_argument("--reclaims", type=int, default=4)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="spotrun-tuning-"))
    (root / "market.toml").write_text(MARKET)
    home = root / "home"
    write_settings(
        home, market=str(root / "market.toml"), stop_grace_seconds=5.0, poll_seconds=0.25
    )
    settings = load_settings(home)
    info = start_service(settings, quiet=True)
    url = f"http://{info['host']}:{info['port']}"
    key = credentials(settings)
    rest = Client(url, *key)
    sm = boto3.client(
        "sagemaker",
        endpoint_url=url,
        region_name="us-east-1",
        aws_access_key_id=key[0],
        aws_secret_access_key=key[1],
        config=Config(retries={"max_attempts": 1}),
    )
    data = channels(root)
    common = {
        "RoleArn": "arn:aws:iam::123456789012:role/Bench",
        "InputDataConfig": data,
        "OutputDataConfig": {"S3OutputPath": (root / "out").as_uri()},
    }
    try:
        sm.create_training_job(
            TrainingJobName="defaults",
            AlgorithmSpecification={"AlgorithmName": "xgboost", "TrainingInputMode": "File"},
            HyperParameters=STATIC,
            ResourceConfig={
                "InstanceType": "ml.c5.xlarge",
                "InstanceCount": 1,
                "VolumeSizeInGB": 10,
            },
            StoppingCondition={"MaxRuntimeInSeconds": 1800},
            **common,
        )
        started = time.time()
        sm.create_hyper_parameter_tuning_job(
            HyperParameterTuningJobName="digits-xgb",
            HyperParameterTuningJobConfig={
                "Strategy": "Bayesian",
                "ResourceLimits": {
                    "MaxNumberOfTrainingJobs": args.trials,
                    "MaxParallelTrainingJobs": args.parallel,
                },
                "HyperParameterTuningJobObjective": {
                    "Type": "Minimize",
                    "MetricName": "validation:merror",
                },
                "ParameterRanges": {
                    "ContinuousParameterRanges": [
                        {
                            "Name": "eta",
                            "MinValue": "0.05",
                            "MaxValue": "0.5",
                            "ScalingType": "Logarithmic",
                        },
                        {"Name": "subsample", "MinValue": "0.5", "MaxValue": "1.0"},
                    ],
                    "IntegerParameterRanges": [
                        {"Name": "max_depth", "MinValue": "2", "MaxValue": "8"}
                    ],
                },
                "RandomSeed": 1,
            },
            TrainingJobDefinition={
                "AlgorithmSpecification": {"AlgorithmName": "xgboost", "TrainingInputMode": "File"},
                "StaticHyperParameters": STATIC,
                "HyperParameterTuningResourceConfig": {
                    "InstanceType": "ml.c5.xlarge",
                    "InstanceCount": 1,
                    "VolumeSizeInGB": 10,
                },
                "StoppingCondition": {"MaxRuntimeInSeconds": 1800, "MaxWaitTimeInSeconds": 3600},
                "EnableManagedSpotTraining": True,
                "CheckpointConfig": {"S3Uri": (root / "ckpt").as_uri()},
                **common,
            },
        )
        reclaimed: list[str] = []
        stop = threading.Event()
        thread = threading.Thread(
            target=reclaim,
            args=(rest, sm, "digits-xgb", args.reclaims, reclaimed, stop),
            daemon=True,
        )
        thread.start()
        while True:
            d = sm.describe_hyper_parameter_tuning_job(HyperParameterTuningJobName="digits-xgb")
            if d["HyperParameterTuningJobStatus"] not in ("InProgress", "Stopping"):
                break
            time.sleep(1)
        wall = time.time() - started
        stop.set()
        thread.join()
        while (base := sm.describe_training_job(TrainingJobName="defaults"))[
            "TrainingJobStatus"
        ] == "InProgress":
            time.sleep(1)
        default = next(
            m["Value"]
            for m in base["FinalMetricDataList"]
            if m["MetricName"] == "validation:merror"
        )
        extras = rest.describe_tuning("digits-xgb")["Spotrun"]
        rows = []
        for t in sorted(extras["Trials"], key=lambda t: t["TrainingJobName"]):
            lines = log(rest, t["TrainingJobName"])
            resumed = [int(m.group(1)) for ln in lines if (m := RESUMED.search(ln))]
            fresh = sum("starting fresh" in ln for ln in lines)
            rows.append({**t, "ResumedFromRounds": resumed, "FreshStarts": fresh})
        best = d["BestTrainingJob"]
        result = {
            "status": d["HyperParameterTuningJobStatus"],
            "trials": len(rows),
            "wall_seconds": round(wall, 1),
            "default_validation_merror": default,
            "best_validation_merror": best["FinalHyperParameterTuningJobObjectiveMetric"]["Value"],
            "best_job": best["TrainingJobName"],
            "best_hyperparameters": best["TunedHyperParameters"],
            "interruptions": extras["Interruptions"],
            "reclaimed_trials": reclaimed,
            "cost_usd": extras["CostUSD"],
            "on_demand_cost_usd": extras["OnDemandCostUSD"],
            "savings_usd": extras["SavingsUSD"],
            "savings_percent": extras["SavingsPercent"],
            "rows": rows,
        }
    finally:
        stop_service(settings)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(
        f"tuning job: {result['status']}, {result['trials']} trials in {result['wall_seconds']} s"
    )
    for r in rows:
        hp = " ".join(f"{k}={float(v):.3g}" for k, v in sorted(r["TunedHyperParameters"].items()))
        rounds = ",".join(map(str, r["ResumedFromRounds"])) or "-"
        print(
            f"  {r['TrainingJobName']}  {r['TrainingJobStatus']:9s} {hp:44s} "
            f"merror={r['Objective']}  interruptions={r['Interruptions']}  "
            f"resumed from round {rounds}  fresh starts={r['FreshStarts']}  ${r['CostUSD']:.5f}"
        )
    ok_best = result["best_validation_merror"] <= default
    ok_resume = all(
        r["FreshStarts"] == 1 and all(x > 0 for x in r["ResumedFromRounds"]) for r in rows
    )
    ok_savings = result["savings_usd"] > 0
    best_merror = result["best_validation_merror"]
    print(
        f"best {result['best_job']}: validation:merror {best_merror:.4f} vs the defaults' "
        f"{default:.4f}; target <= defaults: {'met' if ok_best else 'MISSED'}"
    )
    print(
        f"interruptions {result['interruptions']} over {len(reclaimed)} reclaimed trials; no trial "
        f"restarted from round 0: {'met' if ok_resume else 'MISSED'}"
    )
    print(
        f"cost ${result['cost_usd']:.5f}, on demand ${result['on_demand_cost_usd']:.5f}, saved "
        f"${result['savings_usd']:.5f} ({result['savings_percent']} %), target > 0: "
        f"{'met' if ok_savings else 'MISSED'}"
    )
    return 0 if ok_best and ok_resume and ok_savings else 1


if __name__ == "__main__":
    sys.exit(main())
