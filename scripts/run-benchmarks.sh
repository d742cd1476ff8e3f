#!/usr/bin/env bash
# Runs the benchmark suite of docs/benchmarks.md against a release build: every
# run gets a fresh server on a fresh database, so no run inherits another's
# memory or data. Appends one JSON line per run to OUT.
#
#   cargo build --release        # the server, taskwire-bench and fanout-baseline
#   scripts/run-benchmarks.sh [OUT.jsonl]        # default bench-results.jsonl
#   python3 scripts/bench_report.py OUT.jsonl --svg docs/benchmarks-fanout-latency.svg
#
# Environment: RUNS (default 3), PORT (18080), WORK (/tmp/bench: the database
# folder, whose disk the fsync ceiling is measured on), BIN (target/release),
# ONLY (a regex of labels to run; unanchored, so ONLY=fanout-100 also runs
# ref-fanout-100 and seed-fanout-100), TASKWIRE_ADMIN_TOKEN (default: random),
# REFERENCE (default 1; 0 skips the ref-* runs against fanout-baseline,
# the no-database fan-out the fan-out figures are compared with),
# SEED (default 1; 0 skips the seed-* runs against bench/seed-node, the seed's
# design in Node that taskwire must beat; needs node and npm, and installs the
# reference's packages with `npm ci` on first use).
set -euo pipefail

OUT=${1:-bench-results.jsonl}
RUNS=${RUNS:-3}
PORT=${PORT:-18080}
WORK=${WORK:-/tmp/bench}
BIN=${BIN:-target/release}
ONLY=${ONLY:-.}
REFERENCE=${REFERENCE:-1}
SEED=${SEED:-1}
SEED_DIR=$(cd "$(dirname "$0")/.." && pwd)/bench/seed-node
export TASKWIRE_ADMIN_TOKEN=${TASKWIRE_ADMIN_TOKEN:-bench-$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')}
mkdir -p "$WORK"
ulimit -n "$(ulimit -Hn)"

if [[ $REFERENCE == 1 && ! -x $BIN/fanout-baseline ]]; then
    echo "no $BIN/fanout-baseline: cargo build --release (or REFERENCE=0)" >&2
    exit 2
fi

if [[ $SEED == 1 ]]; then
    command -v node >/dev/null && command -v npm >/dev/null ||
        { echo "no node or npm for the seed's design (or SEED=0)" >&2; exit 2; }
    # Installed once; again if a package is missing or was built for another node.
    if ! (cd "$SEED_DIR" && node -e "require('better-sqlite3'); require('ws'); require('express')") 2>/dev/null; then
        npm ci --prefix "$SEED_DIR" --no-audit --no-fund >&2
    fi
fi

# up: waits until the server just started listens on $PORT.
up() {
    for _ in $(seq 100); do
        (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && return 0
        sleep 0.05
    done
    echo "   (nothing listens on port $PORT after 5 s)" >&2
    return 1
}

# bench LABEL PID SCENARIO ARGS...: one bench run against PID, then PID stopped.
bench() {
    local label=$1 pid=$2
    shift 2
    echo "== $label (run $run of $RUNS): $*" >&2
    "$BIN/taskwire-bench" --addr "127.0.0.1:$PORT" --server-pid "$pid" --db-dir "$WORK" \
        --label "$label" "$@" >>"$OUT" || echo "   (exit status $?)" >&2
    # A server that already exited is not a reason to stop the suite.
    kill "$pid" 2>/dev/null || true
    wait "$pid" || true
    sleep 1 # let the sockets of this run leave TIME_WAIT's way
}

# Each start_* starts one kind of server in the background, on $PORT.
start_taskwire() {
    rm -f "$WORK"/x.db "$WORK"/x.db-wal "$WORK"/x.db-shm
    RUST_LOG=warn "$BIN/taskwire" serve --bind "127.0.0.1:$PORT" --db "$WORK/x.db" \
        >>"$WORK/server.log" 2>&1 &
}
# The no-database fan-out of bench/src/bin/fanout-baseline.rs.
start_reference() {
    "$BIN/fanout-baseline" "127.0.0.1:$PORT" >>"$WORK/server.log" 2>&1 &
}
# The seed's design (bench/seed-node: Node, ws, better-sqlite3 with group
# commit), on a fresh database on the same disk.
start_seed() {
    rm -f "$WORK"/seed.db "$WORK"/seed.db-wal "$WORK"/seed.db-shm
    node "$SEED_DIR/server.js" "127.0.0.1:$PORT" "$WORK/seed.db" >>"$WORK/server.log" 2>&1 &
}

# run START LABEL SCENARIO ARGS...: a fresh server from START, one bench run,
# the server stopped.
run_with() {
    local start=$1 label=$2
    shift 2
    [[ $label =~ $ONLY ]] || return 0
    "$start"
    local pid=$!
    up || true
    bench "$label" "$pid" "$@"
}

# one LABEL ...: taskwire; reference and seed LABEL ...: the same run against
# the other two, in the same round.
one() { run_with start_taskwire "$@"; }
reference() { [[ $REFERENCE == 1 ]] && run_with start_reference "$@" || true; }
seed() { [[ $SEED == 1 ]] && run_with start_seed "$@" || true; }

# A row and the same run against the references that can serve it, so each
# pair is sure to run the same arguments: fanout against both, the rest
# (which need a disk) against the seed's design only.
fanout_row() { one "$@"; reference "ref-$1" "${@:2}"; seed "seed-$1" "${@:2}"; }
disk_row() { one "$@"; seed "seed-$1" "${@:2}"; }

for run in $(seq "$RUNS"); do
    # The targets of issue 8.
    fanout_row fanout-100 fanout -n 100 -w 1000 -r 200
    fanout_row fanout-1000 fanout -n 1000 -w 1000 -r 200
    fanout_row fanout-10000 fanout -n 10000 -w 200 -r 10
    disk_row writes-32 writes -c 32 -s 10
    disk_row writes-1 writes -c 1 -s 10
    disk_row conns-5000 conns -n 5000
    disk_row resume-1000 resume -n 1000 -m 100
    # The plot: event latency against subscribers at one rate (10000 is above).
    one sweep-100 fanout -n 100 -w 200 -r 10
    one sweep-1000 fanout -n 1000 -w 200 -r 10
    one sweep-5000 fanout -n 5000 -w 200 -r 10
    # The floor under fanout-100: the same writes with a single subscriber
    # (the seed's design adds nothing here that fanout-100 does not show).
    one floor-1 fanout -n 1 -w 1000 -r 200
    reference ref-floor-1 fanout -n 1 -w 1000 -r 200
    # Hostile or buggy clients (issue 19), taskwire only, short: a paced
    # writer idle and then beside a member token flooding the readers, at
    # the rates of the attack the issue reports and as fast as answered; an
    # agent looping heartbeats beside dashboards.
    one readflood readflood -n 30000 -s 5 --http-rate 630 --ws-rate 975
    one readflood-spin readflood -n 30000 -s 5
    one tokenflood tokenflood -k 20 -s 5
    # Issues 20 and 21, taskwire only: a task page's first read with 200
    # entries of a 100,000-entry history; 1,000 subscribers over 100 filters
    # beside 100 on plain `tasks`; the Done window with 1,000 subscribers
    # beside 100 on plain `tasks`.
    one history history -n 100000 -o 200
    one filtered filtered -n 1000 -f 100 -u 100 -w 1000 -r 200
    one window window -n 1000 -u 100 -w 1000 -r 200
done
