"""The agent of an elastic job: one attempt, several rounds of training on its host.

An elastic attempt (``spotrun:min-instance-count``) keeps its instances when one of them
goes: the controller starts a new *round* with the hosts that are left, and launches more
when capacity returns, which join at the round after. Every round is a fresh process group
of the round's hosts (``AttemptAnswer.members``, in rank order), started by the agents, not
by torchrun's own restarts (with gloo a surviving rank cannot rejoin a group that lost a
member, and torchrun's ``--max-restarts`` waits for the old world size).

On each host the agent:

1. stages its data once (a host that joins later stages before its first round);
2. waits for a round that has it as a member, says it is ready for it (the round's first
   member also publishes a fresh rendezvous address), and waits until the server says the
   round may start: every member is ready and every host leaving it has flushed;
3. restores the job's newest complete checkpoint and starts the training with the round's
   world size (``SPOTRUN_ELASTIC_ROUND`` tells the script it may resume at another one);
4. when the round moves on, SIGTERMs the training: the ranks agree on a step, rank 0
   saves, every rank exits; the agent flushes the checkpoint and goes back to 2. A
   training that dies because a peer vanished waits a while for the new round too.

A notice for its own instance ends the host's part (``interrupted``, after the flush), a
stop or the attempt's end ends it as on a fixed-size attempt, and a training that finishes
ends it ``succeeded``; the leader of the last round uploads the model.
"""

from __future__ import annotations

import dataclasses
import signal
import socket
import time

from spotrun.agent.config import AttemptInfo
from spotrun.agent.layout import write_config
from spotrun.agent.main import (
    EXIT_OK,
    RENDEZVOUS_PORT,
    Agent,
    _AttemptOver,
)
from spotrun.agent.outcome import FAILURE_REASON_LIMIT, Ending, JobInputError
from spotrun.agent.program import Program, Rendezvous, joined
from spotrun.agent.runner import TrainingProcess
from spotrun.agent.training_env import training_environment
from spotrun.errors import ServiceError
from spotrun.spec import JobSpec
from spotrun.toolkit._notice import NoticeWatcher

#: the variable that tells a script its run is elastic, and in which round it is
ROUND_ENV = "SPOTRUN_ELASTIC_ROUND"
#: how long a training that died on its own waits for a new round before the exit counts
#: as its failure: a peer that vanished breaks the group before the controller has seen it
#: go (a few seconds on the local provider; a Slurm node failure takes SlurmdTimeout)
REGROUP_WAIT = 60.0


class _Released(Exception):
    """This host is no longer a member: it was noticed, or lost touch, and the job goes on
    without it."""


class ElasticAgent(Agent):
    """One host of an elastic attempt, over all of its rounds."""

    #: the round this host last trained in
    round = 0
    #: the round moved on while the training ran
    regrouping = False

    def run(self) -> int:
        spec = self._spec()
        self._report_start()
        try:
            program = self._prepare(spec)
        except JobInputError as e:
            self.reporter.end(Ending.FAILED, failure_reason=str(e)[:FAILURE_REASON_LIMIT])
            return EXIT_OK
        self._install_sigterm_handler()
        watcher = NoticeWatcher(self.cfg.metadata_url, timeout=min(1.0, self.cfg.poll_seconds))
        while True:
            try:
                info = self._await_round(watcher)
            except _AttemptOver:
                live = self.reporter.live()
                if live and self.round > 0:
                    # stopped between rounds: the last round's leader uploads what the
                    # model folder holds, as a stop during training does
                    self.stop_requested = True
                    self._end_here(spec, 0)
                else:
                    self.reporter.end(Ending.STOPPED if live else Ending.INTERRUPTED)
                return EXIT_OK
            except _Released:
                self.reporter.end(Ending.INTERRUPTED)
                return EXIT_OK
            try:
                ending = self._train_round(spec, program, info)
            except JobInputError as e:  # the checkpoint location became unusable, say
                self.reporter.end(Ending.FAILED, failure_reason=str(e)[:FAILURE_REASON_LIMIT])
                return EXIT_OK
            if ending is not None:
                return ending

    # -- between rounds --------------------------------------------------------------------

    def _await_round(self, watcher: NoticeWatcher) -> AttemptInfo:
        """The next round that has this host as a member, once it may start.

        ``_AttemptOver`` when the attempt ends or is stopped; ``_Released`` when a round
        goes on without this host after it trained (it was noticed), or its own instance
        is reclaimed meanwhile.
        """
        host = self.attempt.host
        announced = 0
        said_waiting = False
        while True:
            if self._sigterm.is_set() or watcher.poll() is not None:
                self.reporter.report(noticed=True)
                raise _Released(host)
            info = self.reporter.attempt()
            if not info.live or info.desired == "stop" or info.notice:
                raise _AttemptOver(host)
            members = info.members or ()
            if info.round > self.round and host not in members and self.round > 0:
                raise _Released(host)
            if info.round > self.round and host in members:
                if announced != info.round:
                    fields: dict[str, object] = {"round": info.round}
                    if members[0] == host:
                        fields["address"] = self._round_address(info.round)
                    self.reporter.report(**fields)
                    announced = info.round
                if info.round_ready and info.leader_address is not None:
                    return info
            if not said_waiting:
                self._early_lines.append(
                    f"spotrun-agent: {host} waits for its round of the elastic job"
                )
                said_waiting = True
            time.sleep(min(self.cfg.poll_seconds, 0.5))

    def _round_address(self, round_: int) -> str:
        """``ip:port`` for this round's rendezvous, on the round's first member: a port of
        its own per round, so a new group never meets the old one's lingering sockets."""
        if self.cfg.netns is not None:
            return f"{self.cfg.address}:{RENDEZVOUS_PORT + round_ % 1000}"
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("", 0))
            return f"{self.cfg.address}:{s.getsockname()[1]}"

    # -- one round -------------------------------------------------------------------------

    def _train_round(self, spec: JobSpec, program: Program, info: AttemptInfo) -> int | None:
        """Train one round; the agent's exit code once the host's part is over, None to
        go on to the next round."""
        members = info.members or (self.attempt.host,)
        host = self.attempt.host
        assert info.leader_address is not None
        self.round = info.round
        self.regrouping = self.noticed = self.stop_requested = self.attempt_over = False
        self._kill_at = None
        # the round's hosts are the attempt's, as the training and the upload see them
        self.attempt = dataclasses.replace(self.attempt, hosts=members)
        meet = None
        if len(members) > 1:
            meet = Rendezvous.parse(info.leader_address, len(members), members.index(host))
            program = joined(program, meet)
        write_config(self.layout, spec, host, members, self.attempt.instance_type, self.interface)
        mirror = self._restore(spec)
        env = training_environment(
            self.env,
            self.attempt,
            spec,
            self.layout,
            self.attempt.arn,
            mirror.local_dir if mirror is not None else None,
            program,
            meet,
            self.ranks,
            self.interface,
        )
        env[ROUND_ENV] = str(info.round)
        self._early_lines.append(
            f"spotrun-agent: round {info.round}: {host} is node {members.index(host)} of "
            f"{len(members)} ({', '.join(members)})"
        )
        proc = self._start_training(spec, program, env, mirror)
        exit_code = self._watch(proc)
        finished = exit_code == 0 and self.layout.finished_file.exists()
        settled = finished or self.noticed or self.stop_requested or self.attempt_over
        if not (settled or self.regrouping):
            self._await_regroup()
        self._wind_down(proc)
        if self.regrouping and not (finished or self.noticed or self.stop_requested):
            return None  # flushed: on to the next round
        self._end_here(spec, exit_code)
        return EXIT_OK

    def _poll_round(self, proc: TrainingProcess) -> None:
        """Called while the training runs: a new round stops it at an agreed step."""
        if not self.regrouping and self.reporter.round() > self.round:
            self.regrouping = True
            proc.signal_group(signal.SIGTERM)
            # a rank stuck with a peer that vanished never gets to its checkpoint
            self._kill_at = time.monotonic() + self.attempt.stop_grace
            self._say(
                f"spotrun-agent: the elastic job regroups (round {self.reporter.round()}); "
                "checkpointing this round's training"
            )

    def _await_regroup(self) -> None:
        """A training that stopped on its own, not finished: a peer may have vanished, so
        wait a while for the round to move on before calling it a failure."""
        give_up = time.monotonic() + REGROUP_WAIT
        while time.monotonic() < give_up:
            try:
                info = self.reporter.attempt()
            except ServiceError:
                return
            if info.round > self.round:
                self.regrouping = True
                self._say(
                    f"spotrun-agent: the training stopped as the elastic job regroups "
                    f"(round {info.round})"
                )
                return
            if not info.live or info.desired == "stop" or info.notice:
                self.attempt_over = not info.live
                self.noticed = info.notice
                return
            time.sleep(min(0.5, self.cfg.poll_seconds))
