#!/usr/bin/env bash
# Alternating A/B pairs of one benchmark scenario: two server builds, each run
# on a fresh database, A then B, PAIRS times; one JSON line per run (labelled
# A or B) appended to OUT. Compare ratios within a pair: the machine is noisy.
#
#   A=/path/to/old/taskwire B=target/release/taskwire PAIRS=6 OUT=ab.jsonl \
#     scripts/ab-pairs.sh fanout -n 1000 -w 1000 -r 200
#
# Environment: A, B (server binaries), PAIRS (default 6), OUT (ab.jsonl),
# BENCH (target/release/taskwire-bench), PORT (18090), WORK (/tmp/ab).
set -euo pipefail
: "${A:?the A server binary}" "${B:?the B server binary}"
PAIRS=${PAIRS:-6}
OUT=${OUT:-ab.jsonl}
BENCH=${BENCH:-target/release/taskwire-bench}
PORT=${PORT:-18090}
WORK=${WORK:-/tmp/ab}
export TASKWIRE_ADMIN_TOKEN=${TASKWIRE_ADMIN_TOKEN:-ab-$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')}
mkdir -p "$WORK"
ulimit -n "$(ulimit -Hn)"

one() {
    local label=$1 bin=$2
    shift 2
    rm -f "$WORK"/x.db "$WORK"/x.db-wal "$WORK"/x.db-shm
    RUST_LOG=warn "$bin" serve --bind "127.0.0.1:$PORT" --db "$WORK/x.db" >>"$WORK/server.log" 2>&1 &
    local pid=$!
    for _ in $(seq 100); do
        (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break
        sleep 0.05
    done
    "$BENCH" --addr "127.0.0.1:$PORT" --server-pid "$pid" --db-dir "$WORK" --label "$label" --quiet "$@" >>"$OUT" ||
        echo "   ($label: exit status $?)" >&2
    kill "$pid" 2>/dev/null || true
    wait "$pid" || true
    sleep 1
}

for pair in $(seq "$PAIRS"); do
    echo "== pair $pair of $PAIRS: $*" >&2
    one A "$A" "$@"
    one B "$B" "$@"
done
