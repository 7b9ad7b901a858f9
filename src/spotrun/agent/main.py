"""The per-instance supervisor, start to end: prepare, train, watch, finish.

The agent reads its attempt (the job's request, its run plan, its hosts, its stop grace)
from a server and reports through an ``HttpReporter``; it opens no database and needs no
spotrun home, so it runs on any machine that reaches a server. Its last report is the
attempt's end as it classified it (``outcome``), which the controller acts on.

``run_agent`` is a process boundary, so it is where errors are caught broadly:

* ``StaleGeneration`` (a newer attempt owns the job) or ``Refused`` (the server refuses
  the credential: the attempt is over) means nothing more will be accepted: the training is
  killed at once, nothing more is uploaded, and the exit code is 3;
* a problem with the job's own inputs (code, data, its run plan) is the user's: it becomes
  the host's failure reason (``ClientError: …``) and the attempt ends "failed" here;
* anything else is ours: ``InternalServerError: …`` with no ending (a platform fault, which
  the controller resumes from), exit code 1.

Before it exits, the agent waits for a server to take its last reports, however long the
servers are away, up to ``SPOTRUN_FLUSH_SECONDS`` (10 minutes); exit code 4 says that some
never reached one.

On an attempt of several instances the agents act as one job:

* algo-1's agent publishes the address its rank 0 serves the rendezvous at (its
  instance's ``SPOTRUN_INSTANCE_ADDRESS``, loopback by default, and a port); every agent
  stages its data, then waits until every host has and the address is there, so the
  trainings start together (``Rendezvous``);
* a notice for any instance reaches every agent (the server's answers say the attempt was
  noticed), and each passes it on to its training as if its own instance were reclaimed,
  so that the ranks of every host agree on one step to stop at.
"""

from __future__ import annotations

import fcntl
import re
import shutil
import signal
import socket
import struct
import sys
import threading
import time
from collections.abc import Mapping
from types import FrameType
from typing import TextIO

from spotrun.agent import isolation
from spotrun.agent.channels import (
    PIPE,
    ChannelDataError,
    cache_channel,
    input_mode,
    link_channel,
    pipe_source,
)
from spotrun.agent.config import LOOPBACK_ADDRESS, AgentConfig, AgentConfigError, AttemptInfo
from spotrun.agent.layout import NETNS_INTERFACE, NETWORK_INTERFACE, MlLayout, write_config
from spotrun.agent.logs import LogPump
from spotrun.agent.outcome import FAILURE_REASON_LIMIT, Ending, JobInputError, Outcome, classify
from spotrun.agent.pipes import PipeSource, PipeWriter, start_pipes, stop_pipes
from spotrun.agent.program import (
    Program,
    Rendezvous,
    joined,
    prepare_program,
    with_container_overrides,
)
from spotrun.agent.reporter import HttpReporter, Refused
from spotrun.agent.runner import TrainingProcess
from spotrun.agent.sync import STALL_ENV, STALL_SECONDS, CheckpointSyncer
from spotrun.agent.training_env import training_environment
from spotrun.agent.uploads import OutputUploads, prepare_side_outputs
from spotrun.errors import ServiceError, SpecError, StaleGeneration
from spotrun.images import AlgorithmRun, RunPlan, plan_from_json
from spotrun.spec import JobSpec, parse_spec
from spotrun.spec._outputs import output_data_uri
from spotrun.storage import CheckpointMirror, StorageError, local_files, tar_folder_to, upload_tree
from spotrun.toolkit._notice import InstanceAction, NoticeWatcher

EXIT_OK = 0
EXIT_INTERNAL = 1
EXIT_BAD_ENVIRONMENT = 2
EXIT_STALE = 3
EXIT_UNDELIVERED = 4
#: how long to wait for the output pipes to close after the training process exits
PIPE_DRAIN_SECONDS = 5.0
#: how often a running attempt reads UpdateTrainingJob's changes (DisableProfiler)
UPDATES_EVERY = 5.0
#: the longest ``restored`` description reported
RESTORED_LIMIT = 1024
#: torch.distributed's usual port: free on an instance with an address of its own
RENDEZVOUS_PORT = 29500


def interface_of(address: str) -> str:
    """The name of this machine's interface that holds ``address`` (loopback's for
    127.0.0.1, or when none is found: the ranks then stay on this machine)."""
    if address == LOOPBACK_ADDRESS:
        return NETWORK_INTERFACE
    siocgifaddr = 0x8915  # the ioctl that reads an interface's IPv4 address
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for _index, name in socket.if_nameindex():
            try:
                raw = fcntl.ioctl(s.fileno(), siocgifaddr, struct.pack("256s", name[:15].encode()))
            except OSError:  # no IPv4 address on it
                continue
            if socket.inet_ntoa(raw[20:24]) == address:
                return name
    return NETWORK_INTERFACE


class _AttemptOver(Exception):
    """The attempt ended (or was stopped, or noticed) before its training started."""


class Agent:
    """One host of one attempt. ``run`` returns the agent's exit code."""

    def __init__(
        self,
        cfg: AgentConfig,
        env: Mapping[str, str],
        reporter: HttpReporter,
        attempt: AttemptInfo,
        echo: TextIO,
    ):
        self.cfg = cfg
        self.env = env
        self.echo = echo
        self.reporter = reporter
        self.attempt = attempt
        self.layout = MlLayout(cfg.ml_root, cfg.isolation)
        self.proc: TrainingProcess | None = None
        self.pump: LogPump | None = None
        self.syncer: CheckpointSyncer | None = None
        #: TensorBoard, Debugger and profiler folders mirrored while the training runs
        self.outputs: OutputUploads | None = None
        self._updates_due = 0.0  # when _follow_updates next reads the attempt again
        self.noticed = False
        self.stop_requested = False
        self.attempt_over = False  # the controller ended the attempt while it still ran
        self._kill_at: float | None = None
        self._sigterm = threading.Event()
        self._early_lines: list[str] = []  # the agent's lines from before the log pump exists
        self.rendezvous: Rendezvous | None = None  # where the ranks of several hosts meet
        self.ranks: int | None = None  # ranks per host under torchrun
        #: how the training is cut off from the network (the job's EnableNetworkIsolation)
        self.isolation: isolation.Isolation | None = None
        #: the interface the training's traffic to other hosts leaves by
        self.interface = NETNS_INTERFACE if cfg.netns is not None else interface_of(cfg.address)
        self._pipe_sources: list[PipeSource] = []  # the Pipe-mode channels, listed
        self._pipes: list[PipeWriter] = []  # their writers while a training runs

    # -- the whole run --------------------------------------------------------------------

    def run(self) -> int:
        spec = self._spec()
        fields: dict[str, object] = {}
        if len(self.attempt.hosts) > 1 and self.attempt.leader:
            fields["address"] = self._rendezvous_address()  # first: the others wait for it
        self._report_start(**fields)
        try:
            program = self._prepare(spec)
            mirror = self._restore(spec)
        except JobInputError as e:
            self.reporter.end(Ending.FAILED, failure_reason=str(e)[:FAILURE_REASON_LIMIT])
            return EXIT_OK
        except _AttemptOver:
            self.reporter.end(Ending.STOPPED if self.reporter.live() else Ending.INTERRUPTED)
            return EXIT_OK
        self.reporter.check()
        if self.reporter.desired() == "stop":
            # stopped (or ended) while downloading: there is nothing to run or to upload
            live = self.reporter.live()
            self.reporter.end(Ending.STOPPED if live else Ending.INTERRUPTED)
            return EXIT_OK
        checkpoint_dir = mirror.local_dir if mirror is not None else None
        env = training_environment(
            self.env,
            self.attempt,
            spec,
            self.layout,
            self.attempt.arn,
            checkpoint_dir,
            program,
            self.rendezvous,
            self.ranks,
            self.interface,
        )
        self._install_sigterm_handler()
        try:
            proc = self._start_training(spec, program, env, mirror)
        except JobInputError as e:  # the training could not be isolated as the job asks
            self._stop_pipes()  # started just before the training was to be
            self.reporter.end(Ending.FAILED, failure_reason=str(e)[:FAILURE_REASON_LIMIT])
            return EXIT_OK
        exit_code = self._watch(proc)
        if exit_code != 0 and not (self.noticed or self.stop_requested or self.attempt_over):
            self._heard_of_notice()
        self._wind_down(proc)
        self._end_here(spec, exit_code)
        return EXIT_OK

    def _start_training(
        self,
        spec: JobSpec,
        program: Program,
        env: Mapping[str, str],
        mirror: CheckpointMirror | None,
    ) -> TrainingProcess:
        """Start the training, its log pump (the agent's lines so far first), the
        checkpoint syncer and the side-output uploads."""
        self.reporter.report(phase="training")
        env = {**env, **self._side_outputs(spec)}  # smdebug's files exist before it starts
        self._start_pipes()  # before the process: the script may open <channel>_0 at once
        self.proc = TrainingProcess(
            program.argv, self.layout.code_dir, env, self.cfg.netns, isolation=self.isolation
        )
        self.pump = LogPump(self.reporter, spec.algorithm.metric_definitions, echo=self.echo)
        self.pump.attach(self.proc.stdout, self.proc.stderr)
        for line in self._early_lines:
            self.pump.say(line)
        self._early_lines.clear()
        self.syncer = None
        if mirror is not None:
            self.syncer = CheckpointSyncer(
                mirror,
                self.reporter,
                self.cfg.poll_seconds,
                say=self.pump.say,
                stall=self._stall_seconds(),
            )
            self.syncer.start()
        if self.outputs is not None:
            self.outputs.start()
        return self.proc

    def _side_outputs(self, spec: JobSpec) -> dict[str, str]:
        """Write the side-output config files and make their folders (``self.outputs``,
        started once the log pump exists); returns the variables naming the files.

        A member that submission let through but ``side_outputs`` refuses (a relative
        LocalPath, say; or a job stored before submission checked it): the training still
        runs, without side outputs, and the log names the member and what is wrong.
        """
        self.outputs = None
        try:
            self.outputs, extra = prepare_side_outputs(
                spec, self.layout, self.attempt.host, self.env, say=self._say
            )
        except (SpecError, OSError) as e:
            self._early_lines.append(f"spotrun-agent: WARNING: no side outputs uploaded: {e}")
            return {}
        return extra

    def _end_here(self, spec: JobSpec, exit_code: int) -> None:
        """Classify how the attempt ended on this host, upload what that calls for and
        report the end."""
        outcome = self._classify(exit_code)
        uploaded = self._finish(spec, outcome)
        self.reporter.end(
            outcome.ending,
            exit_code=exit_code,
            finished=outcome.finished,
            failure_reason=outcome.failure_reason,
            model_uploaded=uploaded,
        )

    def _report_start(self, **fields: object) -> None:
        """The host's first report: downloading, in what isolation and network."""
        self.reporter.report(
            phase="downloading",
            isolation=self.cfg.isolation,
            network=self._network(),
            download_started=time.time(),
            **fields,
        )

    def _spec(self) -> JobSpec:
        return parse_spec(dict(self.attempt.request), stored=True)

    def _network(self) -> str:
        """What network the training runs in, as Describe shows it."""
        at = self.attempt
        isolated = isolation.describe(at.request, at.hosts, self.cfg.netns, self.cfg.address)
        if isolated is not None:
            return isolated
        if self.cfg.netns is not None:
            return f"netns {self.cfg.address}"
        if self.cfg.address == LOOPBACK_ADDRESS:
            return "loopback"
        return f"host {self.cfg.address}"

    def _plan(self) -> RunPlan:
        """What the job runs: the plan admission decided and stored with the job."""
        stored = self.attempt.run_plan
        if stored is None:
            raise JobInputError(f"ClientError: {self.attempt.plan_error or 'no run plan'}")
        try:
            return plan_from_json(stored)
        except SpecError as e:
            raise JobInputError(f"ClientError: {e}") from None

    def _prepare(self, spec: JobSpec) -> Program:
        """Lay out /opt/ml and bring channels and code in; returns what to run."""
        at, layout = self.attempt, self.layout
        plan = self._plan()  # before any download: a job that maps to nothing fails fast
        # as early: a job whose training cannot be isolated here fails before it downloads
        self.isolation = isolation.prepare(
            spec.request, at.hosts, at.host, self.cfg.netns, self.cfg.host_addresses
        )
        if self.isolation is isolation.Isolation.ALONE:
            self.interface = NETWORK_INTERFACE  # lo: the only interface its training has
        layout.create()
        layout.host_output_data_dir(at.host).mkdir(parents=True, exist_ok=True)
        write_config(layout, spec, at.host, at.hosts, at.instance_type, self.interface)
        self._stage_channels(spec)
        self.ranks = None if isinstance(plan, AlgorithmRun) else plan.ranks
        program = prepare_program(
            plan,
            spec.hyperparameters,
            layout.code_dir,
            self._early_lines.append,
            stop_grace=at.stop_grace,
        )
        self.reporter.report(download_ended=time.time())
        algo = spec.algorithm
        program = with_container_overrides(
            program, algo.container_entrypoint, algo.container_arguments, layout.code_dir
        )
        if len(at.hosts) > 1 and not at.elastic:  # an elastic job meets round by round
            self.rendezvous = self._meet()
            program = joined(program, self.rendezvous)
        return program

    def _stage_channels(self, spec: JobSpec) -> None:
        """File (and FastFile) channels: cached and linked into place. Pipe channels: only
        listed here; their FIFOs are fed while the training runs (``agent.pipes``)."""
        at, layout = self.attempt, self.layout
        _check_pipe_names(spec)
        self._pipe_sources = []
        for ch in spec.channels:
            shard = None
            if ch.data_distribution == "ShardedByS3Key" and len(at.hosts) > 1:
                shard = (at.hosts.index(at.host), len(at.hosts))
            try:
                if input_mode(ch, spec.algorithm.training_input_mode) == PIPE:
                    self._pipe_sources.append(pipe_source(ch, shard))
                    layout.channel_dir(ch.name).mkdir(parents=True, exist_ok=True)
                    continue
                cached = cache_channel(ch, self.cfg.cache, self.cfg.job)
            except (StorageError, ChannelDataError) as e:
                raise JobInputError(f"ClientError: cannot fetch channel {ch.name!r}: {e}") from e
            link_channel(cached, layout.channel_dir(ch.name), shard)

    def _start_pipes(self) -> None:
        """Make every Pipe channel's ``_0`` FIFO and start feeding it."""
        self._pipes = start_pipes(self.layout.data_dir, self._pipe_sources, self._pipe_failed)

    def _stop_pipes(self) -> None:
        """End the FIFO writers; one stuck in a read from storage is left behind (a daemon
        thread), never waited on."""
        stuck = stop_pipes(self._pipes)
        self._pipes = []
        if stuck:
            self._say(f"spotrun-agent: pipe writers of {', '.join(stuck)} did not end; left")

    def _pipe_failed(self, message: str) -> None:
        """A Pipe channel cannot be streamed: the training fails, with the reason.

        Called from the writer's thread while the FIFO is still open, so the script is
        killed before it could read end of file and take a cut-off epoch for a whole one.
        """
        reason = f"ClientError: Pipe {message}"
        self._say(f"spotrun-agent: {reason}")
        failure = self.layout.failure_file
        if not failure.exists():
            failure.write_text(reason[:FAILURE_REASON_LIMIT])
        if self.proc is not None:
            self.proc.signal_group(signal.SIGKILL)

    def _rendezvous_address(self) -> str:
        """``ip:port`` where this leader's rank 0 will serve the group's rendezvous.

        An instance with an address of its own (a network namespace) has every port to
        itself; on loopback, jobs share the machine, so a port the kernel says is free now.
        """
        address = self.cfg.address
        if self.cfg.netns is not None:
            return f"{address}:{RENDEZVOUS_PORT}"
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("", 0))  # every interface: torchrun's store listens on all of them
            return f"{address}:{s.getsockname()[1]}"

    def _meet(self) -> Rendezvous:
        """The attempt's rendezvous: the leader's published address and this host's rank.

        Every host waits, its own data staged, until every host of the attempt has staged
        its own and the leader has published its address: the trainings start together
        (a gang), so no rank waits in a rendezvous with a timeout while another instance is
        still queued for capacity. ``_AttemptOver`` if the attempt ends, is stopped or
        noticed meanwhile.
        """
        at = self.attempt
        rank = at.hosts.index(at.host)
        self.reporter.flush(self.cfg.flush_seconds)  # this host's download_ended first
        info = self.reporter.attempt()
        waited = False
        while info.leader_address is None or info.ready < len(at.hosts):
            if not info.live or info.desired == "stop" or info.notice:
                raise _AttemptOver(at.host)
            if not waited:
                self._early_lines.append(
                    f"spotrun-agent: waiting for every host of the attempt "
                    f"({info.ready} of {len(at.hosts)} ready)"
                )
                waited = True
            time.sleep(min(self.cfg.poll_seconds, 0.5))
            info = self.reporter.attempt()
        meet = Rendezvous.parse(info.leader_address, len(at.hosts), rank)
        self._early_lines.append(
            f"spotrun-agent: {at.host} is node {rank} of {len(at.hosts)}; rendezvous at "
            f"{meet.master_addr}:{meet.master_port}"
        )
        return meet

    def _restore(self, spec: JobSpec) -> CheckpointMirror | None:
        if spec.checkpoint is None:
            return None
        local = self.layout.map(spec.checkpoint.local_path)
        if self.layout.inside(local) and local.exists():
            shutil.rmtree(local)  # leftovers of an earlier run here would be uploaded as new
        try:
            mirror = CheckpointMirror(local, spec.checkpoint.s3_uri)
        except StorageError as e:
            raise JobInputError(f"ClientError: CheckpointConfig.S3Uri is unusable: {e}") from e
        restored = mirror.restore()
        if restored.skipped:
            self._early_lines.append(
                "spotrun-agent: skipped incomplete or corrupt checkpoints "
                + ", ".join(restored.skipped)
            )
        self.reporter.report(
            restored=restored.describe()[:RESTORED_LIMIT], synced_step=restored.step
        )
        return mirror

    def _stall_seconds(self) -> float:
        raw = self.env.get(STALL_ENV)
        try:
            return float(raw) if raw else STALL_SECONDS
        except ValueError:
            return STALL_SECONDS

    # -- while training -------------------------------------------------------------------

    def _install_sigterm_handler(self) -> None:
        """A SIGTERM to the agent means its instance is going away; the loop handles it."""
        if threading.current_thread() is not threading.main_thread():
            return

        def on_sigterm(_signum: int, _frame: FrameType | None) -> None:
            self._sigterm.set()

        signal.signal(signal.SIGTERM, on_sigterm)

    def _watch(self, proc: TrainingProcess) -> int:
        """React to notices, stops and SIGTERM until the training process exits."""
        watcher = NoticeWatcher(self.cfg.metadata_url, timeout=min(1.0, self.cfg.poll_seconds))
        while True:
            self.reporter.check()
            if not self.noticed:
                notice = watcher.poll()
                if notice is not None:
                    self._on_notice(proc, notice)
                elif self.reporter.notice():
                    self._on_notice(proc, None, other=True)
            if not (self.stop_requested or self.attempt_over) and self.reporter.desired() == "stop":
                self._on_stop(proc)
            if self._sigterm.is_set() and not (self.noticed or self.stop_requested):
                self._on_notice(proc, None)
            self._poll_round(proc)
            self._follow_updates()
            if self._kill_at is not None and time.monotonic() >= self._kill_at:
                self._say("spotrun-agent: stop grace is over; sending SIGKILL")
                proc.signal_group(signal.SIGKILL)
                self._kill_at = None
            exit_code = proc.wait(self.cfg.poll_seconds)
            if exit_code is not None:
                return exit_code

    def _follow_updates(self) -> None:
        """UpdateTrainingJob's ``DisableProfiler`` reaches a running attempt: its profiler
        output is uploaded once more and then no longer (checked every few seconds, and
        only while profiler output is being uploaded)."""
        if self.outputs is None or not self.outputs.has("ProfilerConfig"):
            return
        if time.monotonic() < self._updates_due:
            return
        self._updates_due = time.monotonic() + UPDATES_EVERY
        try:
            info = self.reporter.attempt()
        except (ServiceError, StaleGeneration, Refused):
            return  # the watch loop's own checks deal with a server away or a new attempt
        profiler = info.request.get("ProfilerConfig")
        if isinstance(profiler, Mapping) and profiler.get("DisableProfiler") is True:
            self.outputs.drop("ProfilerConfig")
            self._say(
                "spotrun-agent: profiling was disabled (UpdateTrainingJob); profiler output "
                "is no longer uploaded"
            )

    def _poll_round(self, proc: TrainingProcess) -> None:
        """A fixed-size attempt has no rounds (``ElasticAgent`` acts on a new one)."""

    def _on_notice(
        self, proc: TrainingProcess, notice: InstanceAction | None, other: bool = False
    ) -> None:
        self.noticed = True
        proc.signal_group(signal.SIGTERM)  # first: every second counts for the checkpoint
        if other:
            self._say(
                "spotrun-agent: an instance of this attempt got an interruption notice; "
                "the whole job checkpoints and stops"
            )
        elif notice is None:
            self._say("spotrun-agent: the agent got SIGTERM; treating it as an interruption")
        else:
            self._say(f"spotrun-agent: interruption notice, instance reclaimed at {notice.time}")
        self.reporter.report(noticed=True)

    def _on_stop(self, proc: TrainingProcess) -> None:
        """SIGTERM now, SIGKILL after the attempt's grace.

        "stop" is also what the server answers for an attempt the controller has already
        ended (the capacity was lost, say). That is no user stop: nothing is uploaded and
        the ending counts as an interruption, not as a failure of the user's code.
        """
        grace = self.attempt.stop_grace
        proc.signal_group(signal.SIGTERM)
        self._kill_at = time.monotonic() + grace
        if not self.reporter.live():
            self.attempt_over = True
            why = "the controller ended this attempt"
        else:
            self.stop_requested = True
            why = "stop requested"
        self._say(f"spotrun-agent: {why}; SIGTERM sent, SIGKILL after {grace:g} s")

    def _say(self, text: str) -> None:
        if self.pump is not None:
            self.pump.say(text)

    # -- after training ------------------------------------------------------------------

    def _wind_down(self, proc: TrainingProcess) -> None:
        """End stragglers, flush the last checkpoint, then every log line."""
        assert self.pump is not None
        # the entry point is the container: when it ends, what it left running ends too
        proc.kill()
        self._stop_pipes()
        if not self.pump.wait_eof(PIPE_DRAIN_SECONDS):
            self._say("spotrun-agent: output pipes still open after exit; not waiting longer")
        self.reporter.check()
        if self.syncer is not None:
            self.syncer.stop()
            try:
                self.syncer.sync_now()
            except StorageError as e:
                self._say(f"spotrun-agent: final checkpoint sync failed: {e}")
        if self.outputs is not None:
            # after the checkpoint, which is what a resume needs within a notice's deadline
            self.outputs.finish()
        self.pump.close()

    def _classify(self, exit_code: int) -> Outcome:
        failure_text = None
        if self.layout.failure_file.is_file():
            with self.layout.failure_file.open(errors="replace") as f:
                failure_text = f.read(FAILURE_REASON_LIMIT)
        return classify(
            exit_code,
            noticed=self.noticed or self.attempt_over,
            stop_requested=self.stop_requested,
            finished_file=self.layout.finished_file.exists(),
            failure_text=failure_text,
            last_stderr=self.pump.last_stderr if self.pump is not None else None,
        )

    def _heard_of_notice(self) -> None:
        """On several hosts, a training that stops without a notice here may have stopped
        for another host's (its ranks agreed to), before this agent heard of it: ask the
        server for a little while before calling it a failure."""
        if len(self.attempt.hosts) < 2:
            return
        give_up = time.monotonic() + 3 * self.cfg.poll_seconds
        while not self.noticed:
            try:
                info = self.reporter.attempt()
            except ServiceError:
                return
            if info.notice or self.reporter.notice():
                self.noticed = True
                self._say("spotrun-agent: the training stopped for another instance's notice")
            elif not info.live:
                self.attempt_over = True
                return
            elif time.monotonic() >= give_up:
                return
            else:
                time.sleep(min(0.5, self.cfg.poll_seconds))

    def _finish(self, spec: JobSpec, outcome: Outcome) -> bool:
        """Upload the model (and output data) if the ending calls for it and this host is
        the leader; returns whether it did."""
        if not outcome.uploads_model or not self.attempt.leader:
            return False
        self.reporter.report(phase="uploading")
        if spec.compress_model:
            tar_folder_to(spec.model_artifact_uri, self.layout.model_dir)
            if local_files(self.layout.output_data_dir):
                tar_folder_to(spec.output_artifact_uri, self.layout.output_data_dir)
        else:
            # CompressionType NONE: model and output data go up file by file, under the
            # prefixes ``model/`` (which Describe names) and ``data/`` beside it
            upload_tree(self.layout.model_dir, spec.model_artifact_uri)
            upload_tree(self.layout.output_data_dir, output_data_uri(spec))
        return True

    def abandon(self) -> None:
        """Kill the training and stop background work without writing anything more."""
        if self.proc is not None:
            self.proc.kill()
        stop_pipes(self._pipes)


def _check_pipe_names(spec: JobSpec) -> None:
    """A Pipe channel's FIFOs (``<name>_<n>``) must not take another channel's folder."""
    names = {ch.name for ch in spec.channels}
    for ch in spec.channels:
        if input_mode(ch, spec.algorithm.training_input_mode) != PIPE:
            continue
        fifo = re.compile(re.escape(ch.name) + r"_\d+")
        clash = sorted(n for n in names if fifo.fullmatch(n))
        if clash:
            raise JobInputError(
                f"ClientError: InputDataConfig: channel {clash[0]!r} has the name of a FIFO "
                f"of Pipe channel {ch.name!r} ({ch.name}_0, {ch.name}_1, ...); rename one"
            )


def run_agent(env: Mapping[str, str], echo: TextIO | None = None) -> int:
    """Run one agent to the end; returns the process exit code (0 also when training failed)."""
    out = echo if echo is not None else sys.stdout
    try:
        cfg = AgentConfig.from_env(env)
    except AgentConfigError as e:
        print(f"spotrun-agent: {e}", file=sys.stderr)
        return EXIT_BAD_ENVIRONMENT
    reporter = HttpReporter(cfg)
    try:
        attempt = reporter.open()
    except (StaleGeneration, Refused) as e:
        print(f"spotrun-agent: {e}; giving up this attempt", file=sys.stderr)
        return EXIT_STALE
    except (ServiceError, AgentConfigError) as e:
        print(f"spotrun-agent: cannot start: {e}", file=sys.stderr)
        return EXIT_INTERNAL
    if attempt.elastic:
        from spotrun.agent.elastic import ElasticAgent  # it builds on this module

        agent: Agent = ElasticAgent(cfg, env, reporter, attempt, out)
    else:
        agent = Agent(cfg, env, reporter, attempt, out)
    try:
        code = agent.run()
    except (StaleGeneration, Refused) as e:
        agent.abandon()
        reporter.close(0)
        print(f"spotrun-agent: {e}; giving up this attempt", file=sys.stderr)
        return EXIT_STALE
    except BaseException as e:
        agent.abandon()
        reason = f"InternalServerError: {type(e).__name__}: {e}"[:FAILURE_REASON_LIMIT]
        print(f"spotrun-agent: {reason}", file=sys.stderr)
        # no ending: the agent cannot tell how the attempt went, which is a platform fault
        reporter.report(failure_reason=reason, phase="done")
        code = EXIT_INTERNAL
    return _flush(reporter, cfg.flush_seconds, code)


def _flush(reporter: HttpReporter, bound: float, code: int) -> int:
    """Wait (up to ``bound`` seconds) for a server to take the last reports."""
    delivered = reporter.close(bound)
    try:
        reporter.check()
    except (StaleGeneration, Refused) as e:
        print(f"spotrun-agent: {e}; the last reports were refused", file=sys.stderr)
        return EXIT_STALE
    if not delivered:
        print(
            f"spotrun-agent: {reporter.pending} reports reached no server within {bound:g} s; "
            "giving up on them",
            file=sys.stderr,
        )
        return code or EXIT_UNDELIVERED
    return code
