"""Jobs as the API shows them: DescribeTrainingJob's shape, plus spotrun's own details."""

from __future__ import annotations

import copy
from typing import Any

from spotrun.control.billing import savings_percent
from spotrun.spec import describe_notes
from spotrun.store import JobRecord, Store


def describe(
    store: Store, name: str, extras: bool = True, price_source: str | None = None
) -> dict[str, Any]:
    """DescribeTrainingJob for one job; spotrun's own details sit under ``Spotrun``.

    ``price_source`` names the catalog the costs were priced from (EC2 prices of the type
    behind ``ml.*``, not SageMaker's); it is shown as ``Spotrun.PriceSource``."""
    job = store.get_job(name)
    spec = job.spec
    # the stored request, with UpdateTrainingJob's changes over it and AWS's defaults filled
    # in; Tags are not a Describe member (ListTags reads them), spotrun's view shows them
    out: dict[str, Any] = with_defaults({**job.request, **job.updates})
    out.pop("Tags", None)
    if extras:
        out["Tags"] = [{"Key": k, "Value": v} for k, v in store.tags(job.arn)]
    # RoleArn is on every SageMaker request: the docs say once that it has no effect
    notes = [n for n in describe_notes(job.request) if not n.startswith("RoleArn")]
    profiler = out.get("ProfilerConfig")
    if isinstance(profiler, dict):
        out["ProfilingStatus"] = "Disabled" if profiler.get("DisableProfiler") else "Enabled"
    out.update(
        {
            "TrainingJobName": job.name,
            "TrainingJobArn": job.arn,
            "ModelArtifacts": {"S3ModelArtifacts": spec.model_artifact_uri},
            "TrainingJobStatus": str(job.status),
            "SecondaryStatus": str(job.secondary),
            "CreationTime": job.created_at,
            "LastModifiedTime": job.last_modified,
            "SecondaryStatusTransitions": [
                {
                    "Status": t.secondary,
                    "StartTime": t.start_time,
                    **({"EndTime": t.end_time} if t.end_time is not None else {}),
                    # members accepted only to be recorded (VpcConfig, KMS keys, …) say so
                    # in the first status, rather than being silently ignored
                    "StatusMessage": (
                        f"{t.message}. {'. '.join(notes)}." if i == 0 and notes else t.message
                    ),
                }
                for i, t in enumerate(store.transitions(name))
            ],
        }
    )
    if job.tuning_job is not None:
        # the tuning job that launched it: in the same account and region as the job
        prefix = job.arn.rsplit(":", 1)[0]
        out["TuningJobArn"] = f"{prefix}:hyper-parameter-tuning-job/{job.tuning_job}"
    if job.failure_reason:
        out["FailureReason"] = job.failure_reason
    if job.training_start is not None:
        out["TrainingStartTime"] = job.training_start
    if job.training_end is not None:
        out["TrainingEndTime"] = job.training_end
    if job.training_seconds > 0:
        out["TrainingTimeInSeconds"] = max(1, job.training_seconds)
        out["BillableTimeInSeconds"] = max(1, job.billable_seconds)
    final: dict[str, tuple[float, float]] = {}
    for mname, value, t in store.metrics(name):
        final[mname] = (value, t)
    if final:
        out["FinalMetricDataList"] = [
            {"MetricName": k, "Value": v, "Timestamp": t} for k, (v, t) in final.items()
        ]
    if extras:
        out["Spotrun"] = spotrun_extras(store, job)
        if price_source is not None:
            out["Spotrun"]["PriceSource"] = price_source
    return out


def with_defaults(request: dict[str, Any]) -> dict[str, Any]:
    """A stored request with the members AWS fills in when they were not given, as its
    DescribeTrainingJob shows them (the SDK's ``attach`` reads some, such as
    ``OutputDataConfig.KmsKeyId``, without a default of its own)."""
    out = copy.deepcopy(request)
    algo = out.setdefault("AlgorithmSpecification", {})
    algo.setdefault("EnableSageMakerMetricsTimeSeries", False)
    output = out.setdefault("OutputDataConfig", {})
    output.setdefault("KmsKeyId", "")
    output.setdefault("CompressionType", "GZIP")
    out.setdefault("HyperParameters", {})
    for flag in (
        "EnableNetworkIsolation",
        "EnableInterContainerTrafficEncryption",
        "EnableManagedSpotTraining",
    ):
        out.setdefault(flag, False)
    for channel in out.get("InputDataConfig") or []:
        channel.setdefault("CompressionType", "None")
        channel.setdefault("RecordWrapperType", "None")
        s3 = channel.get("DataSource", {}).get("S3DataSource")
        if isinstance(s3, dict):
            s3.setdefault("S3DataDistributionType", "FullyReplicated")
    return out


def spotrun_extras(store: Store, job: JobRecord) -> dict[str, Any]:
    """What SageMaker does not show: attempts, money, where and how each attempt ran."""
    hosts = store.hosts(job.name)
    attempts = []
    for a in store.attempts(job.name):
        mine = [h for h in hosts if h.generation == a.generation]
        attempts.append(
            {
                "Generation": a.generation,
                "State": a.state,
                "Cause": a.cause,
                "Pool": a.pool,
                "Spot": a.spot,
                "CreatedAt": a.created_at,
                "EndedAt": a.ended_at,
                "NoticeDeadline": a.notice_deadline,
                # an elastic attempt: its round now and the round's hosts, in rank order
                "Elastic": (
                    None
                    if a.members is None
                    else {"Round": a.round, "Members": list(a.members), "Size": len(a.members)}
                ),
                "Hosts": [
                    {
                        "Host": h.host,
                        "Phase": h.phase,
                        # netns <ip> (an address of its own) or loopback (shared, ports apart)
                        "Network": h.network,
                        "Rendezvous": h.address,
                        "Round": h.round,
                        "ExitCode": h.exit_code,
                        "Restored": h.restored,
                        "LastCheckpointSync": h.last_sync_at,
                        "CheckpointFiles": h.synced_files,
                        "LastSyncedCheckpointStep": h.synced_step,
                        "CheckpointSyncStalledSince": h.sync_stalled_since,
                        "DownloadSeconds": (
                            round(h.download_ended - h.download_started, 3)
                            if h.download_started is not None and h.download_ended is not None
                            else None
                        ),
                    }
                    for h in mine
                ],
            }
        )
    savings = savings_percent(job.training_seconds, job.billable_seconds)
    return {
        "Interruptions": job.interruptions,
        "RetriesUsed": job.retries_used,
        "Isolation": job.isolation,
        "CostUSD": round(job.cost, 6),
        "OnDemandCostUSD": round(job.on_demand_cost, 6),
        "SavingsPercent": round(savings, 1),
        "SpotSeconds": job.spot_seconds,
        "OnDemandSeconds": job.on_demand_seconds,
        "Scheduling": scheduling(job),
        "StopReason": job.stop_reason,
        "Attempts": attempts,
        "Events": [
            {"Time": e.time, "Kind": e.kind, "Message": e.message} for e in store.events(job.name)
        ],
        "Instances": [
            {
                "Id": r.id,
                "Provider": r.provider,
                "Generation": r.generation,
                "Host": r.host,
                "InstanceType": r.instance_type,
                "Zone": r.zone,
                "Spot": r.spot,
                "LaunchedAt": r.launched_at,
                "TerminatedAt": r.terminated_at,
                "Cause": r.cause,
            }
            for r in store.instances(job.name)
        ],
    }


def scheduling(job: JobRecord) -> dict[str, Any]:
    """The job's policy, its deadline and compute (as given, or the defaults they take),
    and the pools it accepts."""
    spec = job.spec
    sched = spec.scheduling
    deadline = sched.deadline_seconds or spec.stopping.max_wait_seconds
    return {
        "Policy": sched.policy,
        "DeadlineInSeconds": deadline,
        "DeadlineTime": None if deadline is None else job.created_at + deadline,
        "ComputeInSeconds": sched.compute_seconds or spec.stopping.max_runtime_seconds,
        "Pools": [str(p) for p in sched.pools],
    }


def summary(job: JobRecord) -> dict[str, Any]:
    """ListTrainingJobs' TrainingJobSummary."""
    out: dict[str, Any] = {
        "TrainingJobName": job.name,
        "TrainingJobArn": job.arn,
        "CreationTime": job.created_at,
        "TrainingJobStatus": str(job.status),
        "SecondaryStatus": str(job.secondary),
        "LastModifiedTime": job.last_modified,
    }
    if job.training_end is not None:
        out["TrainingEndTime"] = job.training_end
    return out
