"""What spotrun does with each member of a CreateTrainingJob request: the field support table.

Every member path of AWS's ``CreateTrainingJobRequest`` (structures walked member by member,
list items written ``[]``, maps and lists of scalars taken whole; a row may also stand for a
whole structure, and then covers everything under it) has exactly one row:

- ``HONOURED``: spotrun acts on it as SageMaker does.
- ``RECORDED``: accepted, stored and shown in DescribeTrainingJob, but without effect; the
  row's reason says why, and ``describe_notes`` lists the ones a request carries.
- ``REFUSED``: refused when its condition holds (``any value``, ``true``, …), with the
  row's reason and what to do instead. A refused row whose condition is narrower than
  "any value" is honoured for the other values (``KeepAlivePeriodInSeconds`` 0, …).

``parse_spec`` enforces the refusals from this table in one step (``refusal``), so a new
refusal is one row. ``tests/test_spec_model.py`` walks the model and fails when a member of
a newer botocore has no row. spotrun's own members, which AWS's model lacks, are listed
apart in ``EXTENSIONS``.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from spotrun.errors import SpecError


class Support(enum.Enum):
    """How spotrun treats a member."""

    #: acted on as SageMaker does
    HONOURED = "honoured"
    #: stored and echoed, without effect
    RECORDED = "recorded"
    #: refused when the row's condition holds
    REFUSED = "refused"


@dataclass(frozen=True)
class When:
    """A condition on a member's value, with the words that describe it."""

    text: str
    holds: Callable[[Any], bool]


def _present(v: Any) -> bool:
    return True


def _true(v: Any) -> bool:
    return v is True


def _non_empty(v: Any) -> bool:
    return isinstance(v, list | tuple) and len(v) > 0


def _positive(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v > 0


def _other_than(allowed: str) -> When:
    # only a string counts: a value of the wrong type is the model check's to name
    return When(f"other than {allowed}", lambda v: isinstance(v, str) and v != allowed)


ANY = When("any value", _present)
TRUE = When("true", _true)
NON_EMPTY = When("a non-empty list", _non_empty)
POSITIVE = When("greater than 0", _positive)


@dataclass(frozen=True)
class Row:
    """One member path's classification."""

    path: str
    support: Support
    #: for RECORDED, why it has no effect; for REFUSED, why and what to do instead
    reason: str = ""
    #: for REFUSED, when the value is refused
    when: When | None = None


def _h(path: str) -> Row:
    return Row(path, Support.HONOURED)


def _rec(path: str, reason: str) -> Row:
    return Row(path, Support.RECORDED, reason)


def _ref(path: str, when: When, reason: str) -> Row:
    return Row(path, Support.REFUSED, reason, when)


_CH = "InputDataConfig[]"
_S3 = _CH + ".DataSource.S3DataSource"
_NO_GROUPS = "spotrun runs homogeneous clusters only (no instance groups)"
_NO_PLANS = "spotrun has no training plans or reserved capacity"
_NO_RULES = (
    "spotrun runs no rule-evaluation containers; leave it out (the hook's and profiler's "
    "output is still written)"
)

ROWS: tuple[Row, ...] = (
    _h("TrainingJobName"),
    _h("HyperParameters"),
    _h("AlgorithmSpecification.TrainingImage"),
    _h("AlgorithmSpecification.AlgorithmName"),
    _h("AlgorithmSpecification.TrainingInputMode"),
    _h("AlgorithmSpecification.MetricDefinitions[].Name"),
    _h("AlgorithmSpecification.MetricDefinitions[].Regex"),
    _h("AlgorithmSpecification.EnableSageMakerMetricsTimeSeries"),
    _h("AlgorithmSpecification.ContainerEntrypoint"),
    _h("AlgorithmSpecification.ContainerArguments"),
    _rec(
        "AlgorithmSpecification.TrainingImageConfig",
        "spotrun pulls images with the host's own registry access; no private-registry "
        "VPC or credentials provider is used",
    ),
    _rec(
        "RoleArn",
        "spotrun assumes no IAM role; instances use the credentials spotrun gives them",
    ),
    _h(_CH + ".ChannelName"),
    _ref(
        _S3 + ".S3DataType",
        _other_than("S3Prefix"),
        "is not supported by spotrun, which reads channels as key prefixes; use S3Prefix",
    ),
    _h(_S3 + ".S3Uri"),
    _h(_S3 + ".S3DataDistributionType"),
    _ref(
        _S3 + ".AttributeNames",
        NON_EMPTY,
        "names attributes of an augmented manifest, which spotrun does not read; leave it "
        "out and use S3Prefix",
    ),
    _ref(
        _S3 + ".InstanceGroupNames",
        NON_EMPTY,
        f"names instance groups, which spotrun does not support ({_NO_GROUPS}); leave it out",
    ),
    _ref(
        _S3 + ".ModelAccessConfig",
        ANY,
        "is not supported by spotrun, which serves no gated JumpStart models; leave it out",
    ),
    _ref(
        _S3 + ".HubAccessConfig",
        ANY,
        "is not supported by spotrun, which has no SageMaker hub; leave it out",
    ),
    _ref(
        _CH + ".DataSource.FileSystemDataSource",
        ANY,
        "is not supported by spotrun (no EFS or FSx mounts); give an S3DataSource",
    ),
    _ref(
        _CH + ".DataSource.DatasetSource",
        ANY,
        "is not supported by spotrun (no hub data sets); give an S3DataSource",
    ),
    _h(_CH + ".ContentType"),
    _h(_CH + ".CompressionType"),
    _h(_CH + ".RecordWrapperType"),
    _h(_CH + ".InputMode"),
    _ref(
        _CH + ".ShuffleConfig",
        ANY,
        "is not supported by spotrun, which does not shuffle channel files; leave it out "
        "and shuffle in the training script",
    ),
    _h("OutputDataConfig.S3OutputPath"),
    _h("OutputDataConfig.CompressionType"),
    _rec(
        "OutputDataConfig.KmsKeyId",
        "spotrun does not encrypt artifacts with KMS; use the storage's own encryption",
    ),
    _h("ResourceConfig.InstanceType"),
    _h("ResourceConfig.InstanceCount"),
    _h("ResourceConfig.VolumeSizeInGB"),
    _rec(
        "ResourceConfig.VolumeKmsKeyId",
        "spotrun does not encrypt instance volumes with KMS",
    ),
    _ref(
        "ResourceConfig.KeepAlivePeriodInSeconds",
        POSITIVE,
        "asks for a warm pool; spotrun keeps no instance between jobs (a spot instance may "
        "be reclaimed at any moment, and on-demand ones are not kept either); leave it out "
        "or give 0",
    ),
    _ref(
        "ResourceConfig.InstanceGroups",
        NON_EMPTY,
        "heterogeneous clusters are not supported by spotrun; give InstanceType and "
        "InstanceCount instead",
    ),
    _ref("ResourceConfig.TrainingPlanArn", ANY, f"{_NO_PLANS}; leave it out"),
    _ref(
        "ResourceConfig.InstancePlacementConfig",
        ANY,
        "is not supported by spotrun (no UltraServer placement); leave it out",
    ),
    _ref(
        "ResourceConfig.InstancePreferences",
        ANY,
        f"{_NO_PLANS}; give InstanceType, and for spot failover the spotrun:pools tag",
    ),
    _ref(
        "ResourceConfig.SelectedInstanceType",
        ANY,
        "is set by SageMaker from InstancePreferences, which spotrun does not support; "
        "leave it out",
    ),
    _ref(
        "ResourceConfig.SelectedInstanceCount",
        ANY,
        "is set by SageMaker from InstancePreferences, which spotrun does not support; "
        "leave it out",
    ),
    _rec(
        "VpcConfig",
        "spotrun's instances run in no VPC; their network is the host's (see "
        "EnableNetworkIsolation for cutting it off)",
    ),
    _h("StoppingCondition.MaxRuntimeInSeconds"),
    _h("StoppingCondition.MaxWaitTimeInSeconds"),
    _ref(
        "StoppingCondition.MaxPendingTimeInSeconds",
        ANY,
        f"belongs to training plans, and {_NO_PLANS}; leave it out (with spot, "
        "MaxWaitTimeInSeconds bounds the wait for capacity)",
    ),
    _h("Tags[].Key"),
    _h("Tags[].Value"),
    _h("EnableNetworkIsolation"),
    _ref(
        "EnableInterContainerTrafficEncryption",
        TRUE,
        "is not supported by spotrun, which does not encrypt traffic between its "
        "instances; leave it out or give false",
    ),
    _h("EnableManagedSpotTraining"),
    _h("CheckpointConfig.S3Uri"),
    _h("CheckpointConfig.LocalPath"),
    _h("DebugHookConfig"),
    _ref("DebugRuleConfigurations", NON_EMPTY, _NO_RULES),
    _h("TensorBoardOutputConfig"),
    _ref(
        "ExperimentConfig",
        ANY,
        "is not supported by spotrun, which has no SageMaker Experiments; leave it out",
    ),
    _h("ProfilerConfig"),
    _ref("ProfilerRuleConfigurations", NON_EMPTY, _NO_RULES),
    _h("Environment"),
    _h("RetryStrategy.MaximumRetryAttempts"),
    _ref(
        "RemoteDebugConfig.EnableRemoteDebug",
        TRUE,
        "is not supported by spotrun (no remote debugging sessions); leave it out or give false",
    ),
    _ref(
        "InfraCheckConfig.EnableInfraCheck",
        TRUE,
        "is not supported by spotrun, which runs no infrastructure health checks; leave "
        "it out or give false",
    ),
    _ref(
        "SessionChainingConfig.EnableSessionTagChaining",
        TRUE,
        "is not supported by spotrun, which assumes no IAM role; leave it out or give false",
    ),
    _ref(
        "ServerlessJobConfig",
        ANY,
        "is not supported by spotrun, which runs no serverless model customization; "
        "give an image or algorithm to train",
    ),
    _ref(
        "MlflowConfig",
        ANY,
        "is not supported by spotrun, which reports to no managed MLflow; leave it out "
        "and log to MLflow from the training script",
    ),
    _ref(
        "ModelPackageConfig",
        ANY,
        "is not supported by spotrun, which has no model registry; leave it out",
    ),
)

TABLE: Mapping[str, Row] = {row.path: row for row in ROWS}

#: spotrun's own members, which AWS's model lacks: path -> what they do
EXTENSIONS: Mapping[str, str] = {
    "AlgorithmSpecification.SourceDir": (
        "script mode: the folder holding the training code (in place of an image)"
    ),
    "AlgorithmSpecification.EntryPoint": (
        "script mode: the script to run, a relative path inside SourceDir"
    ),
}

#: the test that shows each HONOURED row at work: path -> "tests/<file>.py::<test name>".
#: Each names a test in which spotrun acts on the member (data delivered, a pool picked, a
#: retry taken), not one that only parses it; ``tests/test_spec_model.py`` checks that every
#: HONOURED row has one and that the test exists.
_AGENT_CONTRACT = (
    "tests/test_agent_process.py::test_script_sees_the_contract_and_logs_metrics_and_model_arrive"
)
_SPOT_JOB = "tests/test_sagemaker_api.py::test_spot_job_completes_through_an_interruption"
_MIXED_CHANNELS = (
    "tests/test_input_modes.py::test_a_job_mixing_modes_compression_and_record_wrappers"
)
_METRICS = "tests/test_metrics_extraction.py::test_metrics_from_a_real_run_land_in_the_store"
_POOL = (
    "tests/test_honoured_fields.py::"
    "test_instance_type_and_count_pick_the_pool_the_hosts_and_the_price"
)
_SIDE_OUTPUTS = (
    "tests/test_outputs.py::test_debugger_and_profiler_folders_and_a_last_pass_at_an_interruption"
)
_OVERRIDES = (
    "tests/test_honoured_fields.py::test_container_entrypoint_and_arguments_replace_the_command"
)
HONOURED_BY: Mapping[str, str] = {
    # as on AWS, a job with MetricDefinitions gets its time series whatever the flag says
    # (and spotrun's only series are MetricDefinitions'): served as CloudWatch metrics
    "AlgorithmSpecification.EnableSageMakerMetricsTimeSeries": (
        "tests/test_cloudwatch_metrics.py::test_training_job_analytics_dataframe_is_the_series"
    ),
    "AlgorithmSpecification.ContainerEntrypoint": _OVERRIDES,
    "AlgorithmSpecification.ContainerArguments": _OVERRIDES,
    "TrainingJobName": _SPOT_JOB,
    "HyperParameters": _AGENT_CONTRACT,
    "AlgorithmSpecification.TrainingImage": (
        "tests/test_agent_script_mode.py::test_an_image_mapped_to_a_baked_script"
    ),
    "AlgorithmSpecification.AlgorithmName": (
        "tests/test_algorithms_e2e.py::"
        "test_kmeans_spot_job_restarts_from_scratch_after_an_interruption"
    ),
    "AlgorithmSpecification.TrainingInputMode": (
        "tests/test_input_modes.py::test_pipe_mode_training_survives_a_spot_interruption"
    ),
    "AlgorithmSpecification.MetricDefinitions[].Name": _METRICS,
    "AlgorithmSpecification.MetricDefinitions[].Regex": _METRICS,
    _CH + ".ChannelName": _AGENT_CONTRACT,
    _S3 + ".S3Uri": _AGENT_CONTRACT,
    _S3 + ".S3DataDistributionType": (
        "tests/test_input_modes.py::test_sharded_pipe_channel_streams_only_this_hosts_objects"
    ),
    _CH + ".ContentType": "tests/test_agent_units.py::test_config_documents",
    _CH + ".CompressionType": _MIXED_CHANNELS,
    _CH + ".RecordWrapperType": _MIXED_CHANNELS,
    _CH + ".InputMode": _MIXED_CHANNELS,
    "OutputDataConfig.S3OutputPath": _SPOT_JOB,
    "OutputDataConfig.CompressionType": (
        "tests/test_outputs.py::test_uncompressed_model_lands_file_by_file_where_describe_says"
    ),
    "ResourceConfig.InstanceType": _POOL,
    "ResourceConfig.InstanceCount": _POOL,
    "ResourceConfig.VolumeSizeInGB": (
        "tests/test_sagemaker_fidelity.py::"
        "test_channels_bigger_than_the_volume_are_refused_at_submission"
    ),
    "StoppingCondition.MaxRuntimeInSeconds": (
        "tests/test_controller.py::test_max_runtime_stops_and_keeps_model"
    ),
    "StoppingCondition.MaxWaitTimeInSeconds": (
        "tests/test_controller.py::test_max_wait_after_interruptions"
    ),
    "Tags[].Key": (
        "tests/test_sagemaker_fidelity.py::test_tags_are_added_listed_and_deleted_with_aws_limits"
    ),
    "Tags[].Value": (
        "tests/test_sagemaker_fidelity.py::test_tags_are_added_listed_and_deleted_with_aws_limits"
    ),
    "EnableNetworkIsolation": (
        "tests/test_network_isolation.py::"
        "test_isolated_training_cannot_dial_out_while_its_agent_stages_and_uploads"
    ),
    "EnableManagedSpotTraining": _SPOT_JOB,
    "CheckpointConfig.S3Uri": (
        "tests/test_agent_process.py::test_notice_checkpoint_resume_and_channel_fetched_once"
    ),
    "CheckpointConfig.LocalPath": (
        "tests/test_honoured_fields.py::"
        "test_checkpoint_local_path_is_where_checkpoints_are_restored_and_synced_from"
    ),
    "DebugHookConfig": _SIDE_OUTPUTS,
    "TensorBoardOutputConfig": (
        "tests/test_outputs.py::test_tensorboard_files_reach_storage_while_the_job_runs"
    ),
    "ProfilerConfig": _SIDE_OUTPUTS,
    "Environment": _AGENT_CONTRACT,
    "RetryStrategy.MaximumRetryAttempts": (
        "tests/test_retry_strategy.py::test_an_instance_lost_without_notice_is_retried_and_counts"
    ),
}


def rows(support: Support | None = None) -> list[Row]:
    """The table's rows, or those of one kind."""
    return [r for r in ROWS if support is None or r.support is support]


def values_at(request: Any, path: str) -> Iterator[tuple[str, Any]]:
    """Each ``(concrete path, value)`` a request holds at a table path (``[]`` expanded to
    each item's index); parts of the wrong type are passed over, for the model to name."""

    def walk(node: Any, parts: list[str], at: str) -> Iterator[tuple[str, Any]]:
        if not parts:
            yield at, node
            return
        part, rest = parts[0], parts[1:]
        is_list = part.endswith("[]")
        name = part.removesuffix("[]")
        if not isinstance(node, Mapping) or name not in node:
            return
        here = f"{at}.{name}" if at else name
        if not is_list:
            yield from walk(node[name], rest, here)
        elif isinstance(node[name], list | tuple):
            for i, item in enumerate(node[name]):
                yield from walk(item, rest, f"{here}[{i}]")

    return walk(request, path.split("."), "")


def refusal(request: Mapping[str, Any], *, any_value_only: bool = False) -> SpecError | None:
    """The first REFUSED row whose condition the request meets, as the error to raise.

    ``any_value_only`` looks only at rows refused whatever the value; ``parse_spec`` asks
    for those before the model check (a refused member is named as refused, not for a
    flaw in its contents) and for the rest after it (their condition reads the value,
    which must be well-formed first).
    """
    for row in ROWS:
        if row.support is not Support.REFUSED or row.when is None:
            continue
        if any_value_only and row.when is not ANY:
            continue
        for at, value in values_at(request, row.path):
            if row.when.holds(value):
                # "ManifestFile is not supported…" reads better than a bare "is not…"
                if isinstance(value, str) and row.reason.startswith("is "):
                    return SpecError(at, f"{value} {row.reason}")
                return SpecError(at, row.reason)
    return None


def describe_notes(request: Mapping[str, Any]) -> list[str]:
    """One line for each RECORDED member a request carries: what it is and why it has no
    effect (for DescribeTrainingJob's status messages and the docs)."""
    notes = []
    for row in rows(Support.RECORDED):
        if any(True for _ in values_at(request, row.path)):
            notes.append(f"{row.path} is recorded without effect: {row.reason}")
    return notes


def check_refusals(request: Mapping[str, Any], *, any_value_only: bool = False) -> None:
    """Raise the first refusal the table makes of ``request`` (see ``refusal``)."""
    err = refusal(request, any_value_only=any_value_only)
    if err is not None:
        raise err


#: where the generated page lives, from the repository's root
DOCS_PAGE = "docs/sagemaker-fields.md"
_SUPPORT_WORDS = {
    Support.HONOURED: "honoured",
    Support.RECORDED: "recorded",
    Support.REFUSED: "refused",
}


def _cell(text: str) -> str:
    """Text made safe for one Markdown table cell (a ``|`` would end the cell early)."""
    return text.replace("|", "\\|").replace("\n", " ")


def _test_link(test: str) -> str:
    """A link from the docs page to the file of a ``tests/<file>.py::<name>`` reference."""
    file, _, name = test.partition("::")
    return f"[`{name}`](../{file})"


def _sentence(reason: str) -> str:
    """A row's reason as a cell of its own. Refusal reasons are written to follow the
    field's name in an error ("ShuffleConfig is not supported…"); the table's Field column
    already names it, so the leading "is" goes and the first letter is raised."""
    text = reason.removeprefix("is ")
    return text if text.startswith("spotrun") else text[:1].upper() + text[1:]


def render_markdown() -> str:
    """The field support table as a Markdown page (``docs/sagemaker-fields.md``).

    Generated so the page cannot drift from what ``parse_spec`` enforces: a test compares
    the file with this function's output and says how to write it again.
    """
    # imported here: the table itself needs nothing of the model, only the page's header does
    from spotrun.spec import _model

    m = _model.model()
    lines = [
        "# CreateTrainingJob fields in spotrun",
        "",
        "<!-- Generated from src/spotrun/spec/_support.py by render_markdown(); do not edit.",
        "     Write it again with: python scripts/sagemaker_model.py --write-docs -->",
        "",
        "spotrun takes the request of Amazon SageMaker's CreateTrainingJob. This page lists "
        "every member of that request and what spotrun does with it. Each member is one of:",
        "",
        "- **honoured**: spotrun acts on it as SageMaker does; the last column names a test "
        "that shows it at work.",
        "- **recorded**: accepted, stored and shown by DescribeTrainingJob, but it changes "
        "nothing in spotrun; the reason says why, and the job's description notes it.",
        "- **refused**: a request where the condition holds is refused with a "
        "ValidationException naming the field, its reason and what to do instead. Values "
        "outside the condition are accepted and honoured.",
        "",
        f"The members are those of AWS's own model of the API (botocore {m.botocore_version}, "
        f"API version {m.api_version}), which spotrun ships a copy of. spotrun's tests walk "
        "that model and fail when a member has no row here, or a row names no member, so "
        "the table covers the whole request. A row for a structure covers everything "
        "under it; `[]` stands for each item of a list.",
        "",
        "| Field | Support | Refused when | Reason, or what spotrun does | Shown by |",
        "| --- | --- | --- | --- | --- |",
    ]
    for row in ROWS:
        when = row.when.text if row.when is not None else ""
        if row.support is Support.HONOURED:
            what = "acted on as SageMaker does"
        else:
            what = _sentence(row.reason)
        test = HONOURED_BY.get(row.path)
        if test is not None:
            shown = _test_link(test)
        else:
            shown = "(no test yet)" if row.support is Support.HONOURED else ""
        cells = [f"`{row.path}`", _SUPPORT_WORDS[row.support], when, what, shown]
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    lines += [
        "",
        "spotrun also accepts members of its own, which AWS's model lacks:",
        "",
    ]
    lines += [f"- `{path}`: {what}" for path, what in EXTENSIONS.items()]
    return "\n".join(lines) + "\n"
