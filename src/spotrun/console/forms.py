"""The create-training-job form: its fields, the CreateTrainingJob request they make, and
where each of admission's errors is shown.

The form is the SageMaker console's, field for field where spotrun has the field; its
values become a CreateTrainingJob request that goes through the same admission as the API,
so a refusal is the API's message, shown beside the field its dotted path names
(``InputDataConfig[1].DataSource.S3DataSource.S3Uri`` beside the second channel's S3
location). What the form itself cannot read (a count that is not a number) is refused the
same way, before admission.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from spotrun.images._algorithms import BUILTIN_ALGORITHMS, HyperparameterField, find_algorithm

#: units the two time limits can be given in (the SageMaker console offers a unit too)
UNITS: Mapping[str, int] = {"seconds": 1, "minutes": 60, "hours": 3600, "days": 86400}
#: the algorithm sources the console offers
BUILTIN = "builtin"
CONTAINER = "container"
#: content types the channel field suggests (any other can be typed)
CONTENT_TYPES = (
    "application/x-image",
    "image/png",
    "image/jpeg",
    "application/json",
    "text/csv",
    "text/libsvm",
    "application/x-recordio-protobuf",
)
MAX_CHANNELS = 20  # SageMaker's limit on InputDataConfig

_CHANNEL_KEY = re.compile(r"channel-([0-9]{1,2})-(name|uri|content_type)")


@dataclass
class Channel:
    """One "Input data configuration" block."""

    index: int
    name: str = ""
    uri: str = ""
    content_type: str = ""


@dataclass
class TrainingJobForm:
    """What the form holds: the user's values as typed (for showing the form again)."""

    name: str = ""
    algorithm_source: str = BUILTIN
    algorithm: str = "object-detection"
    image: str = ""
    input_mode: str = "File"
    role: str = ""
    instance_type: str = "ml.p3.2xlarge"
    instance_count: str = "1"
    volume_size: str = "50"
    hyperparameters: dict[str, str] = field(default_factory=dict)
    #: a container's hyperparameters, KEY=VALUE lines (a built-in's have a field each)
    hyperparameters_text: str = ""
    #: a container's metrics, NAME=REGEX lines (a built-in publishes its own)
    metrics_text: str = ""
    channels: list[Channel] = field(default_factory=list)
    checkpoint_uri: str = ""
    checkpoint_local_path: str = ""
    output_path: str = ""
    spot: bool = False
    max_runtime: str = "1"
    max_runtime_unit: str = "days"
    max_wait: str = "2"
    max_wait_unit: str = "days"
    environment: str = ""
    tags: str = ""
    retries: str = ""

    def hyperparameter_fields(self) -> tuple[HyperparameterField, ...]:
        found = find_algorithm(self.algorithm)
        return found.hyperparameters if found is not None else ()


class FormError(Exception):
    """A value the form cannot turn into a request; ``field`` is the form field's id."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


def blank_form(algorithm: str = "object-detection") -> TrainingJobForm:
    """A new form: the algorithm's hyperparameters at their defaults, the channels the
    algorithm reads (when it is a built-in the console knows the channels of)."""
    form = TrainingJobForm(algorithm=algorithm)
    form.hyperparameters = {f.name: f.default or "" for f in form.hyperparameter_fields()}
    names = DEFAULT_CHANNELS.get(algorithm, ("train", "validation"))
    content = "application/x-image" if algorithm in _IMAGE_ALGORITHMS else ""
    form.channels = [Channel(i, n, "", content) for i, n in enumerate(names)]
    return form


_IMAGE_ALGORITHMS = ("object-detection", "semantic-segmentation", "image-classification")
#: the channels each built-in reads, pre-filled on a new form
DEFAULT_CHANNELS: Mapping[str, tuple[str, ...]] = {
    "object-detection": ("train", "validation", "train_annotation", "validation_annotation"),
    "semantic-segmentation": (
        "train",
        "validation",
        "train_annotation",
        "validation_annotation",
    ),
    "image-classification": ("train", "validation"),
    "xgboost": ("train", "validation"),
    "linear-learner": ("train", "validation"),
    "kmeans": ("train",),
}


def read_form(pairs: Iterable[tuple[str, str]]) -> TrainingJobForm:
    """The form as submitted (``application/x-www-form-urlencoded`` pairs)."""
    values: dict[str, str] = {}
    hps: dict[str, str] = {}
    channels: dict[int, Channel] = {}
    for key, value in pairs:
        if key.startswith("hp-"):
            hps[key[3:]] = value.strip()
            continue
        m = _CHANNEL_KEY.fullmatch(key)
        if m is not None:
            index = int(m[1])
            setattr(channels.setdefault(index, Channel(index)), m[2], value.strip())
            continue
        values[key] = value
    form = TrainingJobForm(
        name=values.get("name", "").strip(),
        algorithm_source=values.get("algorithm_source", BUILTIN),
        algorithm=values.get("algorithm", "").strip(),
        image=values.get("image", "").strip(),
        input_mode=values.get("input_mode", "File"),
        role=values.get("role", "").strip(),
        instance_type=values.get("instance_type", "").strip(),
        instance_count=values.get("instance_count", "").strip(),
        volume_size=values.get("volume_size", "").strip(),
        hyperparameters=hps,
        hyperparameters_text=values.get("hyperparameters_text", ""),
        metrics_text=values.get("metrics_text", ""),
        channels=[channels[i] for i in sorted(channels)],
        checkpoint_uri=values.get("checkpoint_uri", "").strip(),
        checkpoint_local_path=values.get("checkpoint_local_path", "").strip(),
        output_path=values.get("output_path", "").strip(),
        spot=values.get("spot") == "on",
        max_runtime=values.get("max_runtime", "").strip(),
        max_runtime_unit=values.get("max_runtime_unit", "days"),
        max_wait=values.get("max_wait", "").strip(),
        max_wait_unit=values.get("max_wait_unit", "days"),
        environment=values.get("environment", ""),
        tags=values.get("tags", ""),
        retries=values.get("retries", "").strip(),
    )
    return form


def _whole(text: str, field: str, what: str) -> int:
    if not re.fullmatch(r"[0-9]{1,9}", text):
        raise FormError(field, f"{what} must be a whole number")
    return int(text)


def _seconds(value: str, unit: str, field: str, what: str) -> int:
    if unit not in UNITS:
        raise FormError(field, f"the unit must be one of {', '.join(UNITS)}")
    if not re.fullmatch(r"[0-9]{1,7}(\.[0-9]{1,3})?", value):
        raise FormError(field, f"{what} must be a number of {unit}")
    return round(float(value) * UNITS[unit])


def _pairs(text: str, field: str, what: str) -> list[tuple[str, str]]:
    """``KEY=VALUE`` lines (blank lines skipped)."""
    out = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        key, sep, value = line.partition("=")
        if not sep or not key.strip():
            raise FormError(field, f"line {number}: write each {what} as KEY=VALUE")
        out.append((key.strip(), value.strip()))
    return out


@dataclass(frozen=True)
class Built:
    """A form's request, and for each request channel the form block it came from."""

    request: dict[str, Any]
    channel_blocks: tuple[int, ...]
    #: the hyperparameters came from the container's KEY=VALUE text, not per-field inputs
    container: bool = False


def build_request(form: TrainingJobForm) -> Built:
    """The CreateTrainingJob request the form stands for; ``FormError`` for what the form
    itself cannot read. Empty optional fields are left out, so admission fills AWS's
    defaults as it does for an API request."""
    algorithm: dict[str, Any] = {"TrainingInputMode": form.input_mode or "File"}
    if form.algorithm_source == BUILTIN:
        if not form.algorithm:
            raise FormError("algorithm", "choose an algorithm")
        algorithm["AlgorithmName"] = form.algorithm
    elif form.algorithm_source == CONTAINER:
        if not form.image:
            raise FormError("image", "give the training image's URI")
        algorithm["TrainingImage"] = form.image
        metrics = _pairs(form.metrics_text, "metrics_text", "metric")
        if metrics:
            algorithm["MetricDefinitions"] = [{"Name": n, "Regex": r} for n, r in metrics]
    else:
        raise FormError("algorithm_source", f"must be {BUILTIN} or {CONTAINER}")
    request: dict[str, Any] = {
        "TrainingJobName": form.name,
        "AlgorithmSpecification": algorithm,
        "ResourceConfig": {
            "InstanceType": form.instance_type,
            "InstanceCount": _whole(form.instance_count, "instance_count", "the instance count"),
            "VolumeSizeInGB": _whole(form.volume_size, "volume_size", "the volume size"),
        },
        "OutputDataConfig": {"S3OutputPath": form.output_path},
        "StoppingCondition": {
            "MaxRuntimeInSeconds": _seconds(
                form.max_runtime, form.max_runtime_unit, "max_runtime", "the maximum runtime"
            )
        },
    }
    if form.role:
        request["RoleArn"] = form.role
    container = form.algorithm_source == CONTAINER
    if container:
        # a container's own names; the built-in's fields (hidden, still posted) do not apply
        hps = dict(_pairs(form.hyperparameters_text, "hyperparameters_text", "hyperparameter"))
    else:
        # an emptied field means "the algorithm's default": it is not sent
        hps = {k: v for k, v in form.hyperparameters.items() if v != ""}
    if hps:
        request["HyperParameters"] = hps
    channels, blocks = [], []
    for block in form.channels:
        if not (block.name or block.uri or block.content_type):
            continue  # an empty block the user added and did not fill
        channel: dict[str, Any] = {
            "ChannelName": block.name,
            "DataSource": {
                "S3DataSource": {
                    "S3DataType": "S3Prefix",
                    "S3Uri": block.uri,
                    "S3DataDistributionType": "FullyReplicated",
                }
            },
        }
        if block.content_type:
            channel["ContentType"] = block.content_type
        channels.append(channel)
        blocks.append(block.index)
    if channels:
        request["InputDataConfig"] = channels
    if form.checkpoint_uri or form.checkpoint_local_path:
        checkpoint = {"S3Uri": form.checkpoint_uri}
        if form.checkpoint_local_path:
            checkpoint["LocalPath"] = form.checkpoint_local_path
        request["CheckpointConfig"] = checkpoint
    if form.spot:
        request["EnableManagedSpotTraining"] = True
        request["StoppingCondition"]["MaxWaitTimeInSeconds"] = _seconds(
            form.max_wait, form.max_wait_unit, "max_wait", "the maximum wait time"
        )
    environment = _pairs(form.environment, "environment", "variable")
    if environment:
        request["Environment"] = dict(environment)
    tags = _pairs(form.tags, "tags", "tag")
    if tags:
        request["Tags"] = [{"Key": k, "Value": v} for k, v in tags]
    if form.retries:
        request["RetryStrategy"] = {
            "MaximumRetryAttempts": _whole(form.retries, "retries", "the retry attempts")
        }
    return Built(request, tuple(blocks), container)


#: an admission error's dotted path (its start) -> the form field it is shown beside
_FIELDS: tuple[tuple[str, str], ...] = (
    ("TrainingJobName", "name"),
    ("AlgorithmSpecification.AlgorithmName", "algorithm"),
    ("AlgorithmSpecification.TrainingImage", "image"),
    ("AlgorithmSpecification.TrainingInputMode", "input_mode"),
    ("AlgorithmSpecification.MetricDefinitions", "metrics_text"),
    ("AlgorithmSpecification", "algorithm"),
    ("RoleArn", "role"),
    ("ResourceConfig.InstanceType", "instance_type"),
    ("ResourceConfig.InstanceCount", "instance_count"),
    ("ResourceConfig.VolumeSizeInGB", "volume_size"),
    ("ResourceConfig", "instance_type"),
    ("CheckpointConfig.LocalPath", "checkpoint_local_path"),
    ("CheckpointConfig", "checkpoint_uri"),
    ("OutputDataConfig", "output_path"),
    ("StoppingCondition.MaxWaitTimeInSeconds", "max_wait"),
    ("StoppingCondition", "max_runtime"),
    ("EnableManagedSpotTraining", "spot"),
    ("Environment", "environment"),
    ("Tags", "tags"),
    ("RetryStrategy", "retries"),
    ("HyperParameters", "hyperparameters"),
    ("InputDataConfig", "channels"),
)
_CHANNEL_PATH = re.compile(r"InputDataConfig\[([0-9]+)\](?:\.(.*))?")


def field_of(path: str, built: Built | None) -> str:
    """The form field an admission error at ``path`` belongs beside (``form`` when none
    fits: shown above the form)."""
    m = _CHANNEL_PATH.match(path)
    if m is not None and built is not None and int(m[1]) < len(built.channel_blocks):
        block = built.channel_blocks[int(m[1])]
        rest = m[2] or ""
        if rest.startswith("ChannelName"):
            return f"channel-{block}-name"
        if rest.startswith("ContentType"):
            return f"channel-{block}-content_type"
        return f"channel-{block}-uri"
    if path.startswith("HyperParameters") and built is not None and built.container:
        return "hyperparameters_text"
    if path.startswith("HyperParameters."):
        return f"hp-{path.split('.', 1)[1]}"
    for prefix, name in _FIELDS:
        if path == prefix or path.startswith((prefix + ".", prefix + "[")):
            return name
    return "form"


def algorithm_names() -> list[str]:
    return sorted(BUILTIN_ALGORITHMS)
