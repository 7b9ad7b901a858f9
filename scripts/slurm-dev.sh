#!/usr/bin/env bash
# A real Slurm cluster on this one host, for developing and testing spotrun's Slurm provider:
# one slurmctld and three slurmd "nodes" (n1, n2, n3) from Debian's slurm-wlm, authenticated
# by a munged of its own, everything on 127.0.0.1.
#
#   scripts/slurm-dev.sh up       install if needed, start, wait until every node is idle
#   scripts/slurm-dev.sh down     stop every job and daemon, remove the runtime files
#   scripts/slurm-dev.sh status   sinfo and squeue, or exit 1 if the cluster is down
#
# Two partitions over the same nodes: `spot` (the default, low priority) and `ondemand`,
# whose jobs preempt spot jobs: the spot job's batch script gets SIGTERM, GraceTime seconds
# to checkpoint, and is requeued, the way a spot instance gets its interruption notice.
# The batch script hears of it at once only if the job was submitted with --signal=B:TERM
# (see the preemption notes in write_conf), and one that exits 0 after its checkpoint ends
# the job as COMPLETED: it must keep waiting until it is requeued. A node set down with
# `scontrol update nodename=n3 state=down reason=...` (a lost instance) ends its jobs
# without grace (SIGTERM, SIGKILL KillWait later), requeues them, and stays down until
# `state=resume`.
#
# Settings, from the environment:
#   SPOTRUN_SLURM_DIR    state folder (default /tmp/spotrun-slurm); the config, spool,
#                        logs, pid files, munge's key and socket all live in it, so two
#                        clusters with two folders and two port ranges do not meet
#   SPOTRUN_SLURM_PORT   slurmctld's port (default 16817); node nK listens on PORT+K
#   SPOTRUN_SLURM_GRACE  the spot partition's GraceTime in seconds (default 10)
#   SPOTRUN_SLURM_REQUEUE_DELAY  seconds a requeued job waits before it may start again
#                        (default 5; Slurm's own default is 120)
#   SPOTRUN_SLURM_NODES  how many slurmd nodes, n1 … nN (default 3, at most 8)
#
# Needs root: the daemons run as root (SlurmUser=root) and munged as the munge user.
set -euo pipefail

DIR=${SPOTRUN_SLURM_DIR:-/tmp/spotrun-slurm}
case "$DIR" in /*) ;; *) DIR="$PWD/$DIR" ;; esac
PORT=${SPOTRUN_SLURM_PORT:-16817}
GRACE=${SPOTRUN_SLURM_GRACE:-10}
REQUEUE_DELAY=${SPOTRUN_SLURM_REQUEUE_DELAY:-5}
COUNT=${SPOTRUN_SLURM_NODES:-3}
[[ "$COUNT" =~ ^[1-8]$ ]] || { echo "SPOTRUN_SLURM_NODES must be 1 to 8, not '$COUNT'" >&2; exit 2; }
NODES=()
for ((i = 1; i <= COUNT; i++)); do NODES+=("n$i"); done
CONF="$DIR/slurm.conf"
MUNGE_DIR="$DIR/munge"
SOCKET="$MUNGE_DIR/munge.socket"
RUN="$DIR/run"
LOG="$DIR/log"
# clients read the config from here; without it they look for DNS SRV records and die
export SLURM_CONF="$CONF"

say() { printf 'slurm-dev: %s\n' "$*"; }
die() { printf 'slurm-dev: %s\n' "$*" >&2; exit 1; }

# --- packages ---------------------------------------------------------------------------

installed() {
  command -v slurmctld >/dev/null && command -v slurmd >/dev/null \
    && command -v sbatch >/dev/null && command -v munged >/dev/null \
    && command -v mungekey >/dev/null
}

apt_install() {
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    slurm-wlm munge >/dev/null
}

install_packages() {
  installed && return 0
  [ "$(id -u)" = 0 ] || die "slurm-wlm and munge are not installed, and installing them needs root"
  command -v apt-get >/dev/null || die "slurm-wlm and munge are not installed, and there is no apt-get"
  say "installing slurm-wlm and munge"
  # the package lists are refreshed only when apt does not know the package yet
  if ! apt-cache show slurm-wlm >/dev/null 2>&1; then apt-get update -qq; fi
  # the packages' maintainer scripts would start the system's slurmctld, slurmd and munge
  # services; this cluster runs its own daemons, so a policy-rc.d forbids that while they
  # install (an image may already ship one, which is then left alone)
  local own_policy=
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
    own_policy=1
  fi
  local rc=0
  if ! apt_install; then
    # package lists old enough to name versions the mirror no longer has
    { apt-get update -qq && apt_install; } || rc=$?
  fi
  if [ -n "$own_policy" ]; then rm -f /usr/sbin/policy-rc.d; fi
  [ "$rc" = 0 ] || die "apt-get install slurm-wlm munge failed ($rc)"
}

# --- processes --------------------------------------------------------------------------

# whether a process runs: a daemon's exit leaves a zombie until init reaps it, which can
# take seconds here, and kill -0 counts a zombie as alive
alive() {
  local stat
  stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
  stat=${stat##*) }
  [ "${stat%% *}" != Z ]
}

# the pid in a pid file if that process runs and is still the named program (a pid file
# left by a crash may name a pid that something else has since been given)
live_pid() {
  local file=$1 name=$2 pid
  [ -s "$file" ] || return 1
  pid=$(tr -dc '0-9' <"$file")
  [ -n "$pid" ] && alive "$pid" || return 1
  [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$name" ] || return 1
  echo "$pid"
}

# the daemons as "pidfile program" lines, in the order they start
daemons() {
  echo "$MUNGE_DIR/munged.pid munged"
  echo "$RUN/slurmctld.pid slurmctld"
  local n
  for n in "${NODES[@]}"; do echo "$RUN/slurmd.$n.pid slurmd"; done
}

count_live() {
  local file name live=0 total=0
  while read -r file name; do
    total=$((total + 1))
    if live_pid "$file" "$name" >/dev/null; then live=$((live + 1)); fi
  done < <(daemons)
  echo "$live $total"
}

# SIGTERM to every pid given, then SIGKILL to those still there after $1 seconds
stop_pids() {
  local wait_s=$1 pid i
  shift
  [ "$#" -gt 0 ] || return 0
  kill -TERM "$@" 2>/dev/null || true
  for ((i = 0; i < wait_s * 10; i++)); do
    for pid in "$@"; do
      if alive "$pid"; then
        sleep 0.1
        continue 2
      fi
    done
    return 0
  done
  kill -KILL "$@" 2>/dev/null || true
}

# wait until a command succeeds, at most $1 seconds
wait_for() {
  local seconds=$1 deadline
  shift
  deadline=$((SECONDS + seconds))
  until "$@"; do
    [ "$SECONDS" -lt "$deadline" ] || return 1
    sleep 0.2
  done
}

# --- munge ------------------------------------------------------------------------------

# A munged of our own, with its own key and socket in the state folder rather than the
# system's /run/munge: no systemd starts one here, and a test's cluster must not depend on,
# or disturb, a developer's. munged runs as the munge user and refuses folders or keys
# that others could write.
start_munge() {
  install -d -o munge -g munge -m 0755 "$MUNGE_DIR"
  runuser -u munge -- test -x "$MUNGE_DIR" \
    || die "the munge user cannot enter $MUNGE_DIR: put the state folder where it can (e.g. in /tmp)"
  if [ ! -s "$MUNGE_DIR/munge.key" ]; then
    runuser -u munge -- mungekey --create --keyfile="$MUNGE_DIR/munge.key"
  fi
  install -o munge -g munge -m 0640 /dev/null "$LOG/munged.log"
  runuser -u munge -- munged --socket="$SOCKET" --key-file="$MUNGE_DIR/munge.key" \
    --pid-file="$MUNGE_DIR/munged.pid" --log-file="$LOG/munged.log" \
    --seed-file="$MUNGE_DIR/munged.seed" </dev/null >>"$LOG/munged.stderr" 2>&1 \
    || die "munged did not start: $(tail -n 5 "$LOG/munged.stderr" "$LOG/munged.log")"
  wait_for 10 munge_works || die "munge -n | unmunge fails: $(tail -n 5 "$LOG/munged.log")"
}

munge_works() {
  munge -n -S "$SOCKET" 2>/dev/null | unmunge -S "$SOCKET" >/dev/null 2>&1
}

# --- slurm ------------------------------------------------------------------------------

write_conf() {
  local n i=0
  cat >"$CONF" <<EOF
# written by scripts/slurm-dev.sh up; rewritten on every fresh start
ClusterName=spotrun
SlurmctldHost=localhost(127.0.0.1)
SlurmctldPort=$PORT
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
# cred_expire is also how long a requeued job must wait before it may start again
AuthInfo=socket=$SOCKET,cred_expire=$REQUEUE_DELAY
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool/%n
SlurmctldPidFile=$RUN/slurmctld.pid
SlurmdPidFile=$RUN/slurmd.%n.pid
SlurmctldLogFile=$LOG/slurmctld.log
SlurmdLogFile=$LOG/slurmd.%n.log
SlurmctldDebug=info
SlurmdDebug=info
MailProg=/bin/true
# no cgroups (none to delegate here): processes are tracked through /proc
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SwitchType=switch/none
MpiDefault=none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
# no accounting: no slurmdbd, no database, no sacct
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
# the nodes are made up: take their CPUs and memory from here, not from the machine
SlurmdParameters=config_overrides
# Slurm binds to every address unless told to bind to what the host's name resolves to;
# start_slurm makes sure that is 127.0.0.1
CommunicationParameters=NoCtldInAddrAny,NoInAddrAny
# a node set DOWN by hand (a lost spot instance) stays down until it is resumed by hand
ReturnToService=1
JobRequeue=1
# seconds between a job's SIGTERM and its SIGKILL when it is cancelled, requeued or loses
# its node
KillWait=5
PreemptType=preempt/partition_prio
PreemptMode=REQUEUE
# Preemption, as measured here (Slurm 22.05.8, 2 busy cores), from an ondemand submit to the
# SIGTERM in the preempted spot job's batch script:
# - The batch script only hears of its preemption at once when the job is submitted with
#   --signal=B:TERM and preempt_send_user_signal is set. Without them the GraceTime SIGTERM
#   goes to the job's steps only (a plain batch script has none), and the script first sees
#   SIGTERM when it is requeued, 12-37 s after the submit whatever the scheduler settings;
#   that delay looks like a slow scheduler but is not one.
# - With them, the default scheduler starts the preemption 1.2-2.0 s after the submit (in
#   the pass the submit triggers); bf_interval=1 gave 0.7-1.9 s; sched_interval=1 gave
#   0.04-1.0 s: a periodic full pass every second backs up the triggered one, and costs
#   next to nothing with a queue this short.
# - The requeue (SIGTERM again, SIGKILL KillWait later, then the node is free) comes
#   GraceTime after the notice at the soonest, and otherwise once the preemptor may preempt
#   again: KillWait + MessageTimeout (5 + 10 s) after the notice, plus up to a second.
SchedulerParameters=sched_interval=1
SlurmctldParameters=preempt_send_user_signal
EOF
  for n in "${NODES[@]}"; do
    i=$((i + 1))
    echo "NodeName=$n NodeHostname=$HOST NodeAddr=127.0.0.1 Port=$((PORT + i)) CPUs=2 RealMemory=1000 State=UNKNOWN" >>"$CONF"
  done
  local nodes
  nodes=$(IFS=,; echo "${NODES[*]}")
  cat >>"$CONF" <<EOF
PartitionName=spot Nodes=$nodes Default=YES PriorityTier=1 PreemptMode=REQUEUE GraceTime=$GRACE MaxTime=INFINITE State=UP
PartitionName=ondemand Nodes=$nodes Default=NO PriorityTier=10 PreemptMode=OFF MaxTime=INFINITE State=UP
EOF
}

all_idle() {
  local states
  states=$(sinfo -h -N -o '%N %T' 2>/dev/null) || return 1
  [ -n "$states" ] || return 1
  ! grep -qv ' idle$' <<<"$states"
}

# NoInAddrAny binds every daemon to the first IPv4 address of the host's name. Where that
# is not 127.0.0.1 (a name that resolves to the LAN, or Debian's usual 127.0.1.1, where
# the nodes could not be reached at their NodeAddr), the daemons run in a UTS namespace of
# their own whose host name is localhost.
resolves_to_loopback() {
  local name=$1 address
  address=$(getent ahostsv4 "$name" | awk 'NR == 1 { print $1 }')
  [ "$address" = 127.0.0.1 ]
}

launch() {
  if [ "$HOST" = localhost ] && [ "$(hostname)" != localhost ]; then
    unshare --uts sh -c 'hostname localhost && exec "$@"' sh "$@"
  else
    "$@"
  fi
}

# the TCP ports the given processes listen on other than 127.0.0.1, as hex addr:port
wide_listeners() {
  local pid inodes=" "
  for pid in "$@"; do
    inodes+=$(find "/proc/$pid/fd" -lname 'socket:*' -printf '%l ' 2>/dev/null | tr -dc '0-9 ')
  done
  # /proc/net/tcp{,6}: local address in field 2, state in 4 (0A: listening), inode in 10
  cat /proc/net/tcp /proc/net/tcp6 2>/dev/null | awk -v inodes=" $inodes " \
    '$4 == "0A" && index(inodes, " " $10 " ") && $2 !~ /^0100007F:/ { print $2 }'
}

start_slurm() {
  local n pids=() file name pid
  launch slurmctld -c -f "$CONF" </dev/null >>"$LOG/slurmctld.stderr" 2>&1 \
    || die "slurmctld did not start: $(tail -n 5 "$LOG/slurmctld.stderr" "$LOG/slurmctld.log")"
  for n in "${NODES[@]}"; do
    mkdir -p "$DIR/spool/$n"
    launch slurmd -f "$CONF" -N "$n" </dev/null >>"$LOG/slurmd.$n.stderr" 2>&1 \
      || die "slurmd $n did not start: $(tail -n 5 "$LOG/slurmd.$n.stderr" "$LOG/slurmd.$n.log")"
  done
  wait_for 60 all_idle || die "the nodes are not idle after 60 s: $(sinfo -N 2>&1)"
  while read -r file name; do
    if pid=$(live_pid "$file" "$name"); then pids+=("$pid"); fi
  done < <(daemons)
  local wide
  wide=$(wide_listeners "${pids[@]}" | tr '\n' ' ')
  [ -z "$wide" ] || die "a daemon listens beyond 127.0.0.1 (hex addr:port): $wide"
}

# --- commands ---------------------------------------------------------------------------

up() {
  local live total started
  started=$SECONDS
  read -r live total < <(count_live)
  if [ "$live" = "$total" ]; then
    say "already up in $DIR (with the settings it was started with; down first to change them)"
    echo "export SLURM_CONF=$CONF"
    return 0
  fi
  if [ "$live" != 0 ]; then
    say "only $live of $total daemons are running: starting afresh"
    down
  fi
  [ "$(id -u)" = 0 ] || die "needs root (the daemons run as root, munged as the munge user)"
  install_packages
  # an up that fails half way stops what it started, so a retry starts clean
  trap 'if [ $? != 0 ]; then say "up failed; stopping what it started"; down; fi' EXIT
  # munge's socket path must fit in a sockaddr_un
  [ "${#SOCKET}" -lt 100 ] || die "the state folder's path is too long for munge's socket: $DIR"
  rm -rf "$RUN" "$DIR/state" "$DIR/spool" "$LOG"
  mkdir -p "$DIR" "$RUN" "$DIR/state" "$DIR/spool" "$LOG"
  HOST=$(hostname)
  if ! resolves_to_loopback "$HOST"; then
    command -v unshare >/dev/null \
      || die "$HOST does not resolve to 127.0.0.1, and there is no unshare to run the daemons as localhost"
    HOST=localhost
  fi
  write_conf
  start_munge
  start_slurm
  trap - EXIT
  say "up in $((SECONDS - started)) s: nodes ${NODES[*]}, slurmctld on 127.0.0.1:$PORT, state in $DIR"
  echo "export SLURM_CONF=$CONF"
}

# processes with a file of the state folder open: slurmstepd keeps its node's log open and
# a batch script its script in the spool, so this finds a job that outlived its slurmd
holders() {
  find /proc/[0-9]*/fd -lname "$DIR/*" 2>/dev/null | cut -d/ -f3 | sort -u
}

down() {
  local file name pid
  if live_pid "$RUN/slurmctld.pid" slurmctld >/dev/null; then
    # slurmctld and slurmd leave running jobs alone when they stop (so that a restart does
    # not lose them); cancel every job first so no job script outlives the cluster
    local jobs=()
    mapfile -t jobs < <(squeue -h -o %i 2>/dev/null)
    if [ "${#jobs[@]}" -gt 0 ]; then
      scancel --quiet "${jobs[@]}" 2>/dev/null || true
      wait_for 20 no_jobs || say "some jobs did not end within 20 s"
    fi
  fi
  # the slurm daemons together (each takes 1.5-2 s to stop), then whatever job outlived
  # them, munged last: the others authenticate through it
  local slurm=() munged
  while read -r file name; do
    [ "$name" = munged ] && continue
    if pid=$(live_pid "$file" "$name"); then slurm+=("$pid"); fi
  done < <(daemons)
  stop_pids 10 "${slurm[@]}"
  munged=$(live_pid "$MUNGE_DIR/munged.pid" munged) || munged=
  local left=()
  for pid in $(holders); do
    [ "$pid" = "$munged" ] || [ "$pid" = $$ ] || left+=("$pid")
  done
  stop_pids 5 "${left[@]}"
  if [ -n "$munged" ]; then stop_pids 10 "$munged"; fi
  # the config and the logs stay for a look after the fact; an up starts them anew
  rm -rf "$RUN" "$DIR/state" "$DIR/spool" "$MUNGE_DIR"
  say "down ($DIR)"
}

no_jobs() {
  [ -z "$(squeue -h -o %i 2>/dev/null)" ]
}

status() {
  local live total
  read -r live total < <(count_live)
  if ! live_pid "$RUN/slurmctld.pid" slurmctld >/dev/null; then
    say "down ($DIR; $live of $total daemons running)"
    return 1
  fi
  [ "$live" = "$total" ] || say "only $live of $total daemons are running"
  echo "export SLURM_CONF=$CONF"
  sinfo
  squeue
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  status) status ;;
  *) die "usage: $0 up|down|status" ;;
esac
