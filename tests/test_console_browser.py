"""The console in a real browser (Chromium, headless, driven by Playwright) against a real
``spotrun server`` storing to moto's S3 server: the managed spot training walk-through
with the object-detection built-in, a refused form, Stop, and a second account's view.

The walk-through is the SageMaker console's: name the job, pick object detection, one
instance, the four channels, a checkpoint location, an output path, managed spot training
with a 48-hour maximum wait; train. "Interrupt now" asks the market to reclaim the
instance; the job resumes and completes, and the savings panel shows DescribeTrainingJob's
figures. Screenshots of the list, the form and the detail are saved (``browser.screenshot``).
"""

from __future__ import annotations

import importlib.util
import math
import re
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from browser import launch, log_in, new_page, screenshot
from sagemaker_server import Server
from sdk_stack import sdk_stack

pytestmark = pytest.mark.torch

BUCKET = "console-walkthrough"
REPO = Path(__file__).resolve().parent.parent


def _make_data() -> Any:
    spec = importlib.util.spec_from_file_location(
        "vision_make_data", REPO / "examples" / "vision_digits" / "make_data.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    yield from launch()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, str, Path]]:
    root = tmp_path_factory.mktemp("console")
    with sdk_stack(root, BUCKET) as st:
        yield st


@pytest.fixture(scope="module")
def detection_data(stack: tuple[Server, str, Path]) -> dict[str, str]:
    """The synthetic detection scenes in the bucket: channel -> S3 URI."""
    _server, s3_url, root = stack
    _make_data().make_data(root / "data", train=160, validation=40, seed=7, kind="detection")
    s3 = boto3.client("s3", endpoint_url=s3_url)
    uris = {}
    for folder in sorted((root / "data" / "detection").iterdir()):
        for f in sorted(folder.iterdir()):
            s3.upload_file(str(f), BUCKET, f"detection/{folder.name}/{f.name}")
        uris[folder.name] = f"s3://{BUCKET}/detection/{folder.name}/"
    return uris


def _wait_text(page: Any, selector: str, pattern: str, timeout: float) -> str:
    """Wait until the element's text matches (the page updates itself); its text."""
    deadline = time.monotonic() + timeout
    text = ""
    while time.monotonic() < deadline:
        loc = page.locator(selector)
        if loc.count():
            text = loc.first.inner_text()
            if re.search(pattern, text):
                return text
        page.wait_for_timeout(250)
    raise AssertionError(f"{selector} never matched {pattern!r}; last text {text!r}")


def test_managed_spot_training_walkthrough_with_object_detection(
    stack: tuple[Server, str, Path], detection_data: dict[str, str], browser: Any, tmp_path: Path
) -> None:
    server, _s3_url, _root = stack
    name = "od-walkthrough"
    page = new_page(browser)
    log_in(page, server.url, server.key)

    page.get_by_role("link", name="Create training job").click()
    page.get_by_label("Job name").fill(name)
    page.get_by_label("Algorithm source").select_option("builtin")
    page.get_by_label("Algorithm", exact=True).select_option("object-detection")
    page.get_by_label("Instance type").select_option("ml.c5.2xlarge")
    page.get_by_label("Instance count").fill("1")
    page.get_by_label("Additional storage volume per instance (GB)").fill("30")
    hyperparameters = {
        "num_classes": "10",
        "num_training_samples": "160",
        "epochs": "6",
        "mini_batch_size": "16",
        "image_shape": "64",
        "learning_rate": "0.001",
        "optimizer": "adam",
    }
    for key, value in hyperparameters.items():
        page.get_by_label(key, exact=True).fill(value)
    names = page.get_by_label("Channel name")
    uris = page.get_by_label("S3 location", exact=True)
    assert names.count() == 4  # object detection's four channels are offered
    for i in range(4):
        channel = names.nth(i).input_value()
        uris.nth(i).fill(detection_data[channel])
    page.get_by_label("S3 location for checkpoints").fill(f"s3://{BUCKET}/checkpoints/{name}")
    page.get_by_label("S3 output path").fill(f"s3://{BUCKET}/output")
    assert not page.get_by_label("Maximum wait time", exact=True).is_visible()
    page.get_by_label("Enable managed spot training").check()
    page.get_by_label("Maximum wait time", exact=True).fill("48")
    page.get_by_label("Maximum wait time unit").select_option("hours")
    page.get_by_label("Maximum runtime", exact=True).fill("1")
    page.get_by_label("Maximum runtime unit").select_option("hours")
    page.get_by_label("Job name").scroll_into_view_if_needed()
    screenshot(page, tmp_path, "console-create-form")
    page.get_by_role("button", name="Create training job").click()
    page.wait_for_url(f"{server.url}/console/jobs/{name}")

    sm = server.client()
    d = sm.describe_training_job(TrainingJobName=name)
    assert d["EnableManagedSpotTraining"] is True
    assert d["StoppingCondition"]["MaxWaitTimeInSeconds"] == 48 * 3600
    assert d["AlgorithmSpecification"]["AlgorithmName"] == "object-detection"
    assert d["HyperParameters"] | hyperparameters == d["HyperParameters"]
    assert {c["ChannelName"] for c in d["InputDataConfig"]} == set(detection_data)

    # training: wait for its first epoch's metric, then have the market reclaim it
    _wait_text(page, "#secondary-status", "Training", 120)
    deadline = time.monotonic() + 120
    while not server.rest().metrics(name).get("validation:mAP"):
        assert time.monotonic() < deadline, "no epoch finished"
        time.sleep(0.5)
    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Interrupt now").click()
    _wait_text(page, "#flash", "Interruption requested", 20)
    _wait_text(page, "#transitions", "Interrupted", 60)
    _wait_text(page, "#status", "Completed", 300)

    d = sm.describe_training_job(TrainingJobName=name)
    assert d["TrainingJobStatus"] == "Completed", d.get("FailureReason")
    assert "Interrupted" in [t["Status"] for t in d["SecondaryStatusTransitions"]]
    training, billable = d["TrainingTimeInSeconds"], d["BillableTimeInSeconds"]
    saving = math.floor((1 - billable / training) * 100 + 0.5)  # half up, as shown
    page.reload()
    sentence = page.locator("#savings-sentence").inner_text()
    assert sentence == (
        f"Training ran for {training} seconds, billed for {billable}, saving {saving}%."
    ), sentence
    extras = server.rest().describe(name)["Spotrun"]
    assert page.locator("#cost").inner_text() == f"${extras['CostUSD']:,.4f}"
    assert page.locator("#on-demand-cost").inner_text() == f"${extras['OnDemandCostUSD']:,.4f}"
    assert page.locator("#interruptions").inner_text() == "1"
    assert "step" in page.locator("#checkpoint").inner_text()
    assert d["ModelArtifacts"]["S3ModelArtifacts"] in page.locator("#artifacts").inner_text()
    # the timeline has the interrupted attempt and the resumed one; the metric is charted
    page.wait_for_selector("#gantt[data-drawn]")
    gantt = page.evaluate("JSON.stringify(Chart.getChart('gantt').data.labels)")
    assert "attempt 1" in gantt and "attempt 2" in gantt, gantt
    page.wait_for_selector("canvas[data-metric='validation:mAP']")
    page.locator("#logs .line").first.wait_for()
    assert "resumed from" in page.locator("#logs").inner_text()
    screenshot(page, tmp_path, "console-job-detail")
    page.evaluate("document.getElementById('gantt').closest('section').scrollIntoView()")
    screenshot(page, tmp_path, "console-job-timeline")
    assert page.errors == []

    page.goto(f"{server.url}/console/jobs")
    row = page.locator(f"tr[data-job='{name}']")
    assert "Completed" in row.inner_text() and "Spot" in row.inner_text()
    assert f"{saving}%" in row.inner_text()
    screenshot(page, tmp_path, "console-job-list")
    assert page.errors == []


def test_invalid_input_is_shown_beside_its_field_and_creates_nothing(
    stack: tuple[Server, str, Path], browser: Any
) -> None:
    server, _s3_url, _root = stack
    sm = server.client()
    before = [j["TrainingJobName"] for j in sm.list_training_jobs()["TrainingJobSummaries"]]
    page = new_page(browser)
    log_in(page, server.url, server.key)
    page.goto(f"{server.url}/console/create")
    page.get_by_label("Job name").fill("bad-input")
    page.get_by_label("Instance count").fill("two")
    page.get_by_role("button", name="Create training job").click()
    error = page.locator("#err-instance_count")
    assert error.inner_text() == "the instance count must be a whole number"
    assert page.get_by_label("Instance count").get_attribute("aria-invalid") == "true"
    # what the user typed is kept; the API's own rules are shown beside their field
    assert page.get_by_label("Job name").input_value() == "bad-input"
    page.get_by_label("Instance count").fill("1")
    page.get_by_label("S3 output path").fill(f"s3://{BUCKET}/output")
    page.get_by_label("num_classes", exact=True).fill("10")
    for i in (0, 2, 3):
        page.get_by_label("S3 location", exact=True).nth(i).fill(f"s3://{BUCKET}/x{i}/")
    page.get_by_label("S3 location", exact=True).nth(1).fill("ftp://elsewhere/validation")
    page.get_by_role("button", name="Create training job").click()
    error = page.locator("#err-channel-1-uri")
    assert "InputDataConfig[1].DataSource.S3DataSource.S3Uri" in error.inner_text()
    page.get_by_label("Enable managed spot training").check()
    page.get_by_label("S3 location", exact=True).nth(1).fill(f"s3://{BUCKET}/validation/")
    page.get_by_label("Maximum wait time", exact=True).fill("10")
    page.get_by_label("Maximum wait time unit").select_option("minutes")
    page.get_by_role("button", name="Create training job").click()
    error = page.locator("#err-max_wait")
    assert "StoppingCondition.MaxWaitTimeInSeconds" in error.inner_text(), error.inner_text()
    after = [j["TrainingJobName"] for j in sm.list_training_jobs()["TrainingJobSummaries"]]
    assert after == before and "bad-input" not in after
    assert page.errors == []


def test_stop_asks_first_then_stops_the_job(stack: tuple[Server, str, Path], browser: Any) -> None:
    server, _s3_url, _root = stack
    request = server.request("console-stop", instance_type="ml.c5.2xlarge", forever="1")
    request["OutputDataConfig"]["S3OutputPath"] = f"s3://{BUCKET}/output"
    sm = server.client()
    sm.create_training_job(**request)
    page = new_page(browser)
    log_in(page, server.url, server.key)
    page.goto(f"{server.url}/console/jobs/console-stop")
    _wait_text(page, "#secondary-status", "Training", 60)
    page.once("dialog", lambda dialog: dialog.dismiss())  # "Cancel" leaves it running
    page.get_by_role("button", name="Stop").click()
    page.wait_for_timeout(500)
    assert sm.describe_training_job(TrainingJobName="console-stop")["TrainingJobStatus"] == (
        "InProgress"
    )
    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Stop").click()
    _wait_text(page, "#flash", "Stop requested", 20)
    _wait_text(page, "#status", "Stopped", 60)
    d = sm.describe_training_job(TrainingJobName="console-stop")
    assert d["TrainingJobStatus"] == "Stopped"
    assert page.get_by_role("button", name="Stop").is_disabled()
    assert page.errors == []


def test_another_account_neither_sees_nor_opens_the_job(
    stack: tuple[Server, str, Path], browser: Any
) -> None:
    server, _s3_url, _root = stack
    request = server.request("console-private", instance_type="ml.c5.2xlarge", steps="5")
    request["OutputDataConfig"]["S3OutputPath"] = f"s3://{BUCKET}/output"
    server.client().create_training_job(**request)
    out = server.cli("keys", "create", "--account", "team-b", "--description", "console test")
    key_b = (
        re.search(r"access key id:\s+(\S+)", out)[1],  # type: ignore[index]
        re.search(r"secret access key:\s+(\S+)", out)[1],  # type: ignore[index]
    )
    owner = new_page(browser)
    log_in(owner, server.url, server.key)
    assert owner.locator("tr[data-job='console-private']").count() == 1

    other = new_page(browser)
    log_in(other, server.url, key_b)
    assert "team-b" in other.locator("header").inner_text()
    assert other.locator("tr[data-job='console-private']").count() == 0
    other.get_by_label("Search").fill("console-private")
    other.wait_for_timeout(800)
    assert other.locator("tr[data-job]").count() == 0
    response = other.goto(f"{server.url}/console/jobs/console-private")
    assert response is not None and response.status == 404
    assert "no training job named 'console-private'" in other.inner_text("main")
    data = other.request.get(f"{server.url}/console/jobs/console-private/data")
    assert data.status == 404
    # nor can it stop the job, even with a valid token of its own session
    other.goto(f"{server.url}/console/jobs")
    token = other.evaluate("JSON.parse(document.body.getAttribute('hx-headers'))['X-CSRF-Token']")
    stop = other.request.post(
        f"{server.url}/console/jobs/console-private/stop", headers={"X-CSRF-Token": token}
    )
    assert stop.status == 404
    status = server.client().describe_training_job(TrainingJobName="console-private")
    assert status["TrainingJobStatus"] != "Stopped" or status.get("StopReason") is None
    assert other.errors == [] and owner.errors == []


def test_a_one_time_link_logs_in_once(stack: tuple[Server, str, Path], browser: Any) -> None:
    server, _s3_url, _root = stack
    out = server.cli("console")
    link = re.search(r"(http://\S+/console/login/\S+)", out)
    assert link is not None, out
    page = new_page(browser)
    page.goto(link[1])
    assert page.locator("#link-account").inner_text() == "default"
    page.get_by_role("button", name="Log in as default").click()
    page.wait_for_url(f"{server.url}/console/jobs")
    assert page.get_by_role("heading", name="Training jobs").is_visible()
    again = new_page(browser)
    response = again.goto(link[1])
    assert response is not None and response.status == 403
    assert "cannot be used" in again.inner_text("main")
    # and the session cookie is out of reach of scripts, and stays on this site
    cookie = next(c for c in page.context.cookies() if c["name"] == "spotrun_console")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"


def test_a_tuning_jobs_trials_objective_and_best_trial(
    stack: tuple[Server, str, Path], browser: Any
) -> None:
    server, _s3_url, _root = stack
    trial = server.request("unused", instance_type="ml.c5.2xlarge")
    definition = {
        "StaticHyperParameters": {},
        "AlgorithmSpecification": trial["AlgorithmSpecification"],
        "RoleArn": trial["RoleArn"],
        "OutputDataConfig": {"S3OutputPath": f"s3://{BUCKET}/tuning"},
        "ResourceConfig": trial["ResourceConfig"],
        "StoppingCondition": trial["StoppingCondition"],
        "EnableManagedSpotTraining": True,
        "CheckpointConfig": {"S3Uri": f"s3://{BUCKET}/tuning-checkpoints"},
        # the objective may sit here instead of in the config; the pages read it either way
        "TuningObjective": {"Type": "Minimize", "MetricName": "train:loss"},
    }
    server.client().create_hyper_parameter_tuning_job(
        HyperParameterTuningJobName="console-tune",
        HyperParameterTuningJobConfig={
            "Strategy": "Grid",
            "ResourceLimits": {"MaxParallelTrainingJobs": 2},
            "ParameterRanges": {
                "IntegerParameterRanges": [{"Name": "steps", "MinValue": "2", "MaxValue": "4"}]
            },
        },
        TrainingJobDefinition=definition,
    )
    page = new_page(browser)
    log_in(page, server.url, server.key)
    page.get_by_role("link", name="Hyperparameter tuning jobs").click()
    page.get_by_role("link", name="console-tune").click()
    _wait_text(page, "#tuning-status", "Completed", 120)
    rows = page.locator("#trials tbody tr")
    assert rows.count() == 3
    # steps=4 reaches the lowest loss (1/4): it is the best trial, shown with its values
    best = page.locator("#best-trial").inner_text()
    assert "train:loss = 0.25" in best and "steps" in best and "4" in best, best
    table = page.locator("#trials").inner_text()
    assert all(f"steps={n}" in table for n in (2, 3, 4)), table
    page.wait_for_selector("#objective[data-drawn='3']")
    page.get_by_role("navigation").get_by_role("link", name="Hyperparameter tuning jobs").click()
    row = page.locator("tr[data-tuning='console-tune']")
    assert "Completed" in row.inner_text() and "3 / 3" in row.inner_text()
    assert page.errors == []
