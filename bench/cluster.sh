#!/usr/bin/env bash
# Cluster benchmark (issue 15): one shoald alone against a 3-node cluster on this machine, in
# one run, interleaved per repetition. Prints throughput per busy core (ops/s divided by the
# servers' CPU seconds per wall second) and the forwarding overhead (p50/p99 at a fixed rate
# through one node's memcached port against the same rate on the node alone).
#
#   bench/cluster.sh            # 5 interleaved repetitions, 10 s per run (~8 min)
#   bench/cluster.sh --quick    # 1 repetition, 2 s per run (~1 min smoke)
#   bench/cluster.sh --replication   # the same, 3-node cluster with --replicas 0 against
#                                    # --replicas 1 (what keeping a replica in sync costs)
#   options: --reps N --duration S --out DIR --no-build --rate R (fixed rate, default 20000)
#            --pipeline P (closed loop, default 16) --tasks T (shoal-client tasks, default 64)
#            --server-cpu N --client-cpu M
#
# Per repetition, in an order that alternates:
#   single:  one shoald (--threads 1). shoal-client's throughput example (native), then
#            shoal-bench over the memcached port: closed loop, then fixed rate (the direct path).
#   cluster: three shoald (--threads 1; the first with --initial-nodes 3, the others --join),
#            once every bucket has a live primary (shoal-ctl status --json). shoal-client's
#            throughput example given one seed (it routes by bucket), then shoal-bench against
#            the first node's memcached port only, so 2/3 of the keys are forwarded to their
#            owner over the peer port: closed loop, then the same fixed rate. `--replicas 0`.
#   replicated (with --replication, against cluster): the same cluster with `--replicas 1`,
#            measured once every bucket's replica is in sync.
# Every server (all of them, in both setups) is pinned to --server-cpu and every load
# generator to --client-cpu, so both setups get the same one core for servers. Each run
# records the sum of the servers' CPU time and each thread's (by name), so the output also
# says which thread of which node did the work (e.g. shoal-control: the peer port).
#
# Native cluster numbers depend on how shoal-client routes: rerun this script unchanged after
# a client change. Every server is stopped by its process id (also on exit, through a trap).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
REPS=5
DURATION=10
OUT=""
BUILD=1
RATE=20000
PIPELINE=16
TASKS=64
SERVER_CPU=0
CLIENT_CPU=1
SETUPS=(single cluster)
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) REPS=1; DURATION=2 ;;
    --replication) SETUPS=(cluster replicated) ;;
    --reps) REPS=$2; shift ;;
    --duration) DURATION=$2; shift ;;
    --out) OUT=$2; shift ;;
    --no-build) BUILD=0 ;;
    --rate) RATE=$2; shift ;;
    --pipeline) PIPELINE=$2; shift ;;
    --tasks) TASKS=$2; shift ;;
    --server-cpu) SERVER_CPU=$2; shift ;;
    --client-cpu) CLIENT_CPU=$2; shift ;;
    -h|--help) sed -n '2,31p' "$0"; exit 0 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
  shift
done

command -v jq >/dev/null || { echo "bench/cluster.sh needs jq" >&2; exit 2; }
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target/bench}
BIN=$CARGO_TARGET_DIR/release
OUT=${OUT:-$CARGO_TARGET_DIR/results/cluster-$(date +%Y%m%d-%H%M%S)}
mkdir -p "$OUT"
WORK=$(mktemp -d)

if [ "$BUILD" = 1 ]; then
  # Two builds: with --example, cargo builds only the examples of the packages named.
  (cd "$ROOT" && cargo build --release -q -p shoald -p shoal-bench -p shoal-ctl \
    && cargo build --release -q -p shoal-client --example throughput)
fi
THROUGHPUT=$BIN/examples/throughput
PIN_SERVER="taskset -c $SERVER_CPU"
PIN_CLIENT="taskset -c $CLIENT_CPU"
if ! taskset -c "$CLIENT_CPU" true 2>/dev/null; then
  echo "warning: cannot pin to CPU $CLIENT_CPU; running unpinned" >&2
  PIN_SERVER=""; PIN_CLIENT=""
fi

# --- process bookkeeping ---------------------------------------------------------------------
PIDS=()      # running servers
NATIVE=()    # their native addresses
MEMCACHE=()  # their memcached addresses
stop_servers() {
  local pid
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  PIDS=(); NATIVE=(); MEMCACHE=()
}
cleanup() { stop_servers; rm -rf "$WORK"; }
trap cleanup EXIT
trap 'exit 130' INT TERM

# start_node NAME ARGS... : starts one shoald, waits for its ready line, appends to the arrays.
PEER=""
start_node() {
  local name=$1; shift
  rm -rf "${WORK:?}/$name"; mkdir -p "$WORK/$name"
  $PIN_SERVER "$BIN/shoald" --listen 127.0.0.1:0 --memcache-listen 127.0.0.1:0 \
    --peer-listen 127.0.0.1:0 --threads 1 --memory 1024MiB --log-level warn \
    --data-dir "$WORK/$name/data" "$@" >"$WORK/$name/out" 2>"$WORK/$name/err" &
  local pid=$!
  PIDS+=("$pid")
  local line=""
  for _ in $(seq 300); do
    line=$(grep -m1 '^shoald ready' "$WORK/$name/out" 2>/dev/null) && break
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  [ -n "$line" ] || { echo "$name did not start:" >&2; cat "$WORK/$name/err" >&2; return 1; }
  NATIVE+=("$(sed -n 's/.*native=\([^ ]*\).*/\1/p' <<<"$line")")
  MEMCACHE+=("$(sed -n 's/.*memcache=\([^ ]*\).*/\1/p' <<<"$line")")
  PEER=$(sed -n 's/.*peer=\([^ ]*\).*/\1/p' <<<"$line")
}

# Waits until every bucket has a live primary and every member applied the table fetched.
wait_settled() { # members
  local status=""
  for _ in $(seq 300); do
    status=$("$BIN/shoal-ctl" --server "${NATIVE[0]}" status --json 2>/dev/null) || status=""
    if [ -n "$status" ] && jq -e --argjson n "$1" '.table_version as $v
        | .healthy and (.members | length) == $n and .buckets_without_live_primary == 0
        and all(.members[]; .status.table_version == $v)
        and .replication.copies_in_sync >= .replication.copies_wanted' >/dev/null 2>&1 <<<"$status"; then
      return 0
    fi
    sleep 0.1
  done
  echo "the cluster did not settle in 30 s:" >&2; jq -c . <<<"$status" >&2
  return 1
}

start_single() { start_node single; }
start_cluster() { # replicas
  start_node node0 --initial-nodes 3 --replicas "$1"
  local seed=$PEER
  start_node node1 --join "$seed"
  start_node node2 --join "$seed"
  wait_settled 3
}

# CPU ticks (utime + stime, 1/100 s) of every thread of every server: "node comm tid ticks".
thread_ticks() {
  local i tid stat comm rest
  for i in "${!PIDS[@]}"; do
    for tid in /proc/"${PIDS[$i]}"/task/*; do
      stat=$(cat "$tid/stat" 2>/dev/null) || continue
      comm=${stat#*(}; comm=${comm%)*}; comm=${comm// /_}
      rest=${stat##*) }
      # shellcheck disable=SC2086
      set -- $rest
      echo "node$i $comm ${tid##*/} $(( ${12} + ${13} ))"
    done
  done
}

# measure SETUP WORKLOAD CMD... : runs CMD (its stdout is one JSON record) with the servers'
# CPU sampled around it, and appends the record with setup, rep, servers' CPU seconds and a
# per-node, per-thread-name breakdown (CPU seconds per wall second) to runs.jsonl.
measure() {
  local setup=$1 workload=$2; shift 2
  thread_ticks >"$WORK/ticks0"
  local t0 t1 rec
  t0=$(date +%s.%N)
  rec=$("$@")
  t1=$(date +%s.%N)
  thread_ticks >"$WORK/ticks1"
  local threads
  threads=$(awk -v wall="$(awk -v a="$t0" -v b="$t1" 'BEGIN {print b - a}')" '
    NR == FNR { before[$3] = $4; next }
    { d[$1 " " $2] += $4 - before[$3] }
    END { s = ""; for (k in d) { split(k, p, " ");
            s = s sprintf("%s{\"node\":\"%s\",\"thread\":\"%s\",\"cpu\":%.3f}", s == "" ? "" : ",", p[1], p[2], d[k] / 100 / wall) }
          print "[" s "]" }' "$WORK/ticks0" "$WORK/ticks1")
  jq -c --arg setup "$setup" --arg workload "$workload" --argjson rep "$REP" \
    --argjson wall "$(awk -v a="$t0" -v b="$t1" 'BEGIN {print b - a}')" --argjson threads "$threads" \
    '. + {setup: $setup, workload: $workload, rep: $rep, threads: $threads,
          servers_cpu: (if .servers_cpu_s then .servers_cpu_s / .duration_s
                        else ([$threads[].cpu] | add) * $wall / .duration_s end)}' \
    <<<"$rec" >>"$OUT/runs.jsonl"
}

# The throughput example's output line as a JSON record.
native_run() {
  local seeds=$1 pids
  pids=$(IFS=,; echo "${PIDS[*]}")
  local line
  line=$($PIN_CLIENT "$THROUGHPUT" "$seeds" "$TASKS" "$DURATION" 1 "$pids")
  echo "# $line" >&2
  sed -n 's/.*: \([0-9]*\) ops, \([0-9]*\) ops\/s, \([0-9]*\) errors server_cpu_s=\([0-9.]*\) wall_s=\([0-9.]*\).*/{"ops":\1,"ops_per_sec":\2,"errors":\3,"servers_cpu_s":\4,"duration_s":\5,"tool":"shoal-client"}/p' <<<"$line"
}

COMMON=(--keys 100000 --value-size 100 --get-ratio 0.9 --connections 50)
bench_run() { # addr label workload extra...
  local addr=$1 label=$2 workload=$3; shift 3
  $PIN_CLIENT "$BIN/shoal-bench" run --protocol memcache --addr "$addr" --label "$label" \
    --workload "$workload" "${COMMON[@]}" --duration "$DURATION" "$@"
}

run_setup() { # single|cluster
  local setup=$1 mc label
  case $setup in
    single) start_single; label=single-direct ;;
    cluster) start_cluster 0; label=cluster-forwarded ;;
    replicated) start_cluster 1; label=replicated-forwarded ;;
  esac
  mc=${MEMCACHE[0]}
  echo "## rep $REP/$REPS: $setup (${#PIDS[@]} node(s); load: $(cut -d' ' -f1-3 /proc/loadavg))"
  measure "$setup" native native_run "${NATIVE[0]}"
  # Preload through the same port (in the cluster, 2/3 of these sets are forwarded).
  $PIN_CLIENT "$BIN/shoal-bench" load --protocol memcache --addr "$mc" "${COMMON[@]}" >/dev/null
  measure "$setup" "p$PIPELINE" bench_run "$mc" "$label" "p$PIPELINE" --pipeline "$PIPELINE"
  measure "$setup" "rate$RATE" bench_run "$mc" "$label" "rate$RATE" --rate "$RATE"
  stop_servers
}

echo "# cluster: $REPS reps x $DURATION s; shoal-client $TASKS tasks, closed loop p$PIPELINE, fixed rate $RATE ops/s; servers on CPU $SERVER_CPU, generators on CPU $CLIENT_CPU; results in $OUT"
echo "# start: $(uptime)"
{ uname -a; nproc; grep -m1 'model name' /proc/cpuinfo; git -C "$ROOT" rev-parse HEAD; } >"$OUT/machine.txt" 2>&1
for REP in $(seq "$REPS"); do
  if [ $((REP % 2)) = 1 ]; then order=("${SETUPS[0]}" "${SETUPS[1]}"); else order=("${SETUPS[1]}" "${SETUPS[0]}"); fi
  for setup in "${order[@]}"; do run_setup "$setup"; done
done
echo "# end: $(uptime)"

# --- table -------------------------------------------------------------------------------------
echo
echo "Medians over $REPS interleaved repetitions (min-max in brackets). Busy cores = servers' CPU"
echo "seconds per wall second (all nodes summed). Raw records: $OUT/runs.jsonl"
echo
jq -r -s --arg tasks "$TASKS" --arg rate "rate$RATE" --arg p "p$PIPELINE" \
  --arg a "${SETUPS[0]}" --arg b "${SETUPS[1]}" '
  def median: sort | if length == 0 then null elif length % 2 == 1 then .[length / 2 | floor]
              else (.[length / 2 - 1] + .[length / 2]) / 2 end;
  def k: if . == null then "-" elif . >= 1e6 then "\(. / 1e4 | round / 100)M"
         elif . >= 1e3 then "\(. / 10 | round / 100)k" else "\(. * 100 | round / 100)" end;
  def spread(f): [.[] | f] as $v | "\($v | median | k) (\($v | min | k)-\($v | max | k))";
  def runs(s; w): [.[] | select(.setup == s and .workload == w)];
  def percore: .ops_per_sec / .servers_cpu;
  . as $all
  | [["native", "native (shoal-client, \($tasks) tasks)"], [$p, "memcached text \($p) (50 conns)"]] as $closed
  | ({single: "one node", cluster: "3-node cluster", replicated: "3-node cluster, 1 replica"}) as $names
  | "| closed loop | \($names[$a]) | \($names[$b]) | \($b) / \($a) |",
    "|---|---|---|---|",
    ($closed[] as [$w, $name]
      | ($all | runs($a; $w)) as $s | ($all | runs($b; $w)) as $c
      | "| \($name) ops/s | \($s | spread(.ops_per_sec)) | \($c | spread(.ops_per_sec)) | \(($c | map(.ops_per_sec) | median) / ($s | map(.ops_per_sec) | median) * 100 | round / 100)x |",
        "| \($name) busy cores | \($s | spread(.servers_cpu)) | \($c | spread(.servers_cpu)) | |",
        "| \($name) ops/s per busy core | \($s | spread(percore)) | \($c | spread(percore)) | **\(($c | map(percore) | median) / ($s | map(percore) | median) * 100 | round / 100)x** |"),
    "",
    "| \($rate) (memcached text, one node'"'"'s port), us | \($names[$a]) | \($names[$b]) | \($b) - \($a) |",
    "|---|---|---|---|",
    (($all | runs($a; $rate)) as $s | ($all | runs($b; $rate)) as $c
      | (["p50", "p90", "p99", "p999"][] as $q
          | "| \($q) | \($s | spread(.latency_us[$q])) | \($c | spread(.latency_us[$q])) | \((($c | map(.latency_us[$q]) | median) - ($s | map(.latency_us[$q]) | median)) * 10 | round / 10) |"),
        "| answered / sent | \($s | map("\(.ops)/\(.sent)") | join(", ")) | \($c | map("\(.ops)/\(.sent)") | join(", ")) | |",
        "| busy cores | \($s | spread(.servers_cpu)) | \($c | spread(.servers_cpu)) | |"),
    "",
    "| setup, workload | CPU per wall second by node and thread (median) |",
    "|---|---|",
    ([$a, $b][] as $setup | ["native", $p, $rate][] as $w
      | ($all | runs($setup; $w)) as $r
      | "| \($setup), \($w) | \([$r[].threads[]] | group_by(.node + " " + .thread)
          | map({k: (.[0].node + " " + .[0].thread), v: (map(.cpu) | median)}) | map(select(.v >= 0.01))
          | map("\(.k) \(.v * 100 | round / 100)") | join(", ")) |")
' "$OUT/runs.jsonl" | tee "$OUT/table.md"
exit 0
