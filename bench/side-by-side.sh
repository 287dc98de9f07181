#!/usr/bin/env bash
# Side-by-side benchmark: shoald (native and memcached text), memcached and redis-server,
# driven by shoal-bench with the same workloads, each server on CPU 0 and the load generator
# on CPU 1. Prints a table of medians, min-max and ratios; raw JSON records stay in --out.
#
#   bench/side-by-side.sh            # 5 interleaved repetitions, 10 s per run (~12 min)
#   bench/side-by-side.sh --quick    # 1 repetition, 2 s per run (~1 min smoke)
#   bench/side-by-side.sh --named --no-capacity   # the named workloads of issue 20 only
#   options: --reps N --duration S --out DIR --targets "shoald-native shoald-text memcached redis"
#            --workloads "p1 p16 rate50k" (a subset; named workloads may be listed too),
#            --named (the workloads are the named ones: full-gauss full-zipf shift large
#            large-notfull), --perf (extra pass: syscalls per request with perf stat),
#            --no-capacity, --no-build, --server-cpu N --client-cpu M,
#            --base BIN (adds targets shoald-base-native and shoald-base-text: another
#            shoald binary, e.g. an earlier commit's, interleaved with this one for an A/B)
#
# p1, p16 and rate50k share one server per target and repetition (1 GiB, preloaded with
# 100,000 keys of 100 B). Each named workload (`shoal-bench presets` lists them: full cache
# with Gaussian or Zipfian keys and 100-4,000 B values, a size shift, large values into a full
# cache, large values not full) gets a fresh server given the memory the workload names (64 MiB;
# 2 GiB for large-notfull), and `shoal-bench run --preset NAME` fills it, measures (8
# connections) and counts the items held where the workload says. The table shows ops/s, p99,
# the hit ratio (where some get missed) and the items held, with ratios.
#
# Same memory for every server: shoald `--memory M MiB`, memcached `-m M`, redis-server
# `--maxmemory M mb --maxmemory-policy allkeys-lru`. shoald's and memcached's limits count the
# same thing: slab pages of 1 MiB holding items (headers, keys, values, chunk slack), reserved
# or taken up to the limit; both keep their hash index and connection buffers outside it
# (shoald's page size is fixed at 1 MiB: no flag changes it; memcached's `slab_page_size` is
# 1 MiB too). redis counts all it allocates (dict tables and per-key objects included) against
# `maxmemory`, so for the same number it holds somewhat less data: the comparison is
# conservative towards redis' items held, not in its favour.
#
# Before and after the runs, `shoal-bench probe` spins on both cores at once and reports how
# often each was taken away (the machine's own noise floor, which bounds every tail latency).
#
# Every server is started fresh for each target and repetition, on loopback ports chosen free
# at run time, and stopped by its process id (also on exit, through a trap).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
REPS=5
DURATION=10
OUT=""
TARGETS="shoald-native shoald-text memcached redis"
WORKLOADS="p1 p16 rate50k"
NAMED_ALL="full-gauss full-zipf shift large large-notfull"
PERF=0
CAPACITY=1
BUILD=1
BASE_BIN=""
SERVER_CPU=0
CLIENT_CPU=1
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) REPS=1; DURATION=2 ;;
    --reps) REPS=$2; shift ;;
    --duration) DURATION=$2; shift ;;
    --out) OUT=$2; shift ;;
    --targets) TARGETS=$2; shift ;;
    --workloads) WORKLOADS=$2; shift ;;
    --named) WORKLOADS=$NAMED_ALL ;;
    --perf) PERF=1 ;;
    --no-capacity) CAPACITY=0 ;;
    --no-build) BUILD=0 ;;
    --base) BASE_BIN=$2; shift ;;
    --server-cpu) SERVER_CPU=$2; shift ;;
    --client-cpu) CLIENT_CPU=$2; shift ;;
    -h|--help) sed -n '2,38p' "$0"; exit 0 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
  shift
done

if [ -n "$BASE_BIN" ]; then
  [ -x "$BASE_BIN" ] || { echo "--base $BASE_BIN is not an executable" >&2; exit 2; }
  TARGETS="$TARGETS shoald-base-native shoald-base-text"
fi
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target/bench}
BIN=$CARGO_TARGET_DIR/release
OUT=${OUT:-$CARGO_TARGET_DIR/results/$(date +%Y%m%d-%H%M%S)}
mkdir -p "$OUT"
WORK=$(mktemp -d)

# --- servers we may need -------------------------------------------------------------------
if ! command -v memcached >/dev/null || ! command -v redis-server >/dev/null; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
  $SUDO apt-get install -y memcached redis-server
fi
if [ "$BUILD" = 1 ]; then
  (cd "$ROOT" && cargo build --release -q -p shoald -p shoal-bench)
fi
PIN_SERVER="taskset -c $SERVER_CPU"
PIN_CLIENT="taskset -c $CLIENT_CPU"
if ! taskset -c "$CLIENT_CPU" true 2>/dev/null; then
  echo "warning: cannot pin to CPU $CLIENT_CPU; running unpinned" >&2
  PIN_SERVER=""; PIN_CLIENT=""
fi
BENCH="$PIN_CLIENT $BIN/shoal-bench"

# Split the workloads: the plain ones share a server, each named one has its own.
"$BIN/shoal-bench" presets >"$WORK/presets.txt"
PLAIN=""; NAMED=""
for workload in $WORKLOADS; do
  case "$workload" in
    p1|p16|rate50k) PLAIN="$PLAIN $workload" ;;
    *) awk -v n="$workload" '$1 == n {found=1} END {exit !found}' "$WORK/presets.txt" || {
         echo "unknown workload $workload (named: $(cut -d' ' -f1 "$WORK/presets.txt" | xargs))" >&2
         exit 2; }
       NAMED="$NAMED $workload" ;;
  esac
done
preset_memory() { awk -v n="$1" '$1 == n {print $2}' "$WORK/presets.txt"; }
MC_USER=()
[ "$(id -u)" -eq 0 ] && MC_USER=(-u "$(id -un)")

# --- process bookkeeping ---------------------------------------------------------------------
SERVER_PID=""
stop_server() {
  if [ -n "$SERVER_PID" ]; then
    kill "$SERVER_PID" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=""
  fi
}
cleanup() { stop_server; rm -rf "$WORK"; }
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
  if command -v python3 >/dev/null; then
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
  else
    local p
    while :; do
      p=$((20000 + RANDOM % 40000))
      (exec 3<>/dev/tcp/127.0.0.1/$p) 2>/dev/null || { echo "$p"; return; }
    done
  fi
}

# Waits until the server answers an item count.
wait_ready() { # protocol addr
  for _ in $(seq 100); do
    if $BIN/shoal-bench items --protocol "$1" --addr "$2" >/dev/null 2>&1; then return 0; fi
    kill -0 "$SERVER_PID" 2>/dev/null || { echo "server exited during start" >&2; return 1; }
    sleep 0.1
  done
  echo "server at $2 did not become ready" >&2
  return 1
}

# start_server TARGET MEMORY_MIB [capped] -> sets SERVER_PID, ADDR, PROTO (capped: redis gets
# --maxmemory MEMORY_MIB with LRU eviction; the others always have their memory limit)
start_server() {
  local target=$1 mem=$2
  case "$target" in
    shoald-native|shoald-text|shoald-base-native|shoald-base-text)
      local bin=$BIN/shoald
      case "$target" in shoald-base-*) bin=$BASE_BIN ;; esac
      # Port 0 for the peer port too, so runs never collide on 7402 (a base build from before
      # the peer port has no such flag).
      local peer=(); "$bin" --help 2>/dev/null | grep -q -- --peer-listen && peer=(--peer-listen 127.0.0.1:0)
      $PIN_SERVER "$bin" --listen 127.0.0.1:0 --memcache-listen 127.0.0.1:0 "${peer[@]}" --threads 1 \
        --memory "${mem}MiB" --log-level warn >"$WORK/shoald.out" 2>"$WORK/shoald.err" &
      SERVER_PID=$!
      for _ in $(seq 100); do grep -q '^shoald ready' "$WORK/shoald.out" 2>/dev/null && break; sleep 0.1; done
      local line; line=$(grep '^shoald ready' "$WORK/shoald.out") || { cat "$WORK/shoald.err" >&2; return 1; }
      if [ "${target%-native}" != "$target" ]; then
        ADDR=$(sed -n 's/.*native=\([^ ]*\).*/\1/p' <<<"$line"); PROTO=native
      else
        ADDR=$(sed -n 's/.*memcache=\([^ ]*\).*/\1/p' <<<"$line"); PROTO=memcache
      fi ;;
    memcached)
      local port; port=$(free_port)
      $PIN_SERVER memcached "${MC_USER[@]}" -l 127.0.0.1 -p "$port" -U 0 -t 1 -m "$mem" -c 4096 \
        >"$WORK/memcached.log" 2>&1 &
      SERVER_PID=$!; ADDR=127.0.0.1:$port; PROTO=memcache ;;
    redis)
      local port extra=(); port=$(free_port)
      [ -n "${3:-}" ] && extra=(--maxmemory "${mem}mb" --maxmemory-policy allkeys-lru)
      $PIN_SERVER redis-server --bind 127.0.0.1 --port "$port" --save '' --appendonly no \
        --daemonize no --loglevel warning --dir "$WORK" "${extra[@]}" >"$WORK/redis.log" 2>&1 &
      SERVER_PID=$!; ADDR=127.0.0.1:$port; PROTO=resp ;;
    *) echo "unknown target $target" >&2; return 1 ;;
  esac
  wait_ready "$PROTO" "$ADDR"
}

COMMON=(--keys 100000 --value-size 100 --get-ratio 0.9 --connections 50)
run() { # target workload extra-args...
  local target=$1 workload=$2; shift 2
  $BENCH run --protocol "$PROTO" --addr "$ADDR" --label "$target" --workload "$workload" \
    --server-pid "$SERVER_PID" "${COMMON[@]}" --duration "$DURATION" "$@" >>"$OUT/runs.jsonl"
}

# Spins on the server's and the generator's core at the same time (as during a run) and
# records how often and how long each core was taken away from its thread.
probe() { # when
  local when=$1 pids=() cpu
  for cpu in "$SERVER_CPU" "$CLIENT_CPU"; do
    ${PIN_SERVER:+taskset -c $cpu} "$BIN/shoal-bench" probe --duration 5 \
      >"$WORK/probe-$cpu.json" 2>/dev/null &
    pids+=($!)
  done
  wait "${pids[@]}"
  for cpu in "$SERVER_CPU" "$CLIENT_CPU"; do
    printf '{"when":"%s","cpu":%s,"stalls":%s}\n' "$when" "$cpu" "$(cat "$WORK/probe-$cpu.json")" \
      >>"$OUT/probe.jsonl"
    sed -n "s/.*gaps_at_least_us\":\(.*\),\"stalled_ms\":\([0-9.]*\).*max_gap_us\":\([0-9.]*\).*/# probe $when, CPU $cpu: gaps [us, count] \1, stalled \2 ms, longest \3 us/p" \
      "$WORK/probe-$cpu.json"
  done
}

echo "# side-by-side: $REPS reps x $DURATION s; targets: $TARGETS; workloads: $WORKLOADS; results in $OUT"
echo "# start: $(uptime)"
{ uname -a; nproc; grep -m1 'model name' /proc/cpuinfo; memcached -V; redis-server --version; } >"$OUT/machine.txt" 2>&1
probe before

for rep in $(seq "$REPS"); do
  # Rotate the order each repetition so no target always runs first.
  read -r -a order <<<"$TARGETS"
  shift_by=$(( (rep - 1) % ${#order[@]} ))
  order=("${order[@]:$shift_by}" "${order[@]:0:$shift_by}")
  for target in "${order[@]}"; do
    echo "## rep $rep/$REPS: $target (load: $(cut -d' ' -f1-3 /proc/loadavg))"
    if [ -n "$PLAIN" ]; then
      start_server "$target" 1024
      $BENCH load --protocol "$PROTO" --addr "$ADDR" "${COMMON[@]}" --label "$target" >/dev/null
      for workload in $PLAIN; do
        case "$workload" in
          p1) run "$target" p1 --pipeline 1 ;;
          p16) run "$target" p16 --pipeline 16 ;;
          rate50k) run "$target" rate50k --rate 50000 ;;
        esac
      done
      stop_server
    fi
    for workload in $NAMED; do
      mem=$(preset_memory "$workload")
      echo "## rep $rep/$REPS: $target $workload (${mem} MiB)"
      start_server "$target" "$mem" capped
      $BENCH run --protocol "$PROTO" --addr "$ADDR" --label "$target" --preset "$workload" \
        --server-pid "$SERVER_PID" --duration "$DURATION" >>"$OUT/runs.jsonl"
      stop_server
    done
  done
done

if [ "$CAPACITY" = 1 ]; then
  # Items held in 64 MiB: 16-byte keys, 100-byte values, written until far beyond capacity.
  cap_targets=()
  case " $TARGETS " in *" shoald-"*) cap_targets+=(shoald-text) ;; esac
  for t in memcached redis; do case " $TARGETS " in *" $t "*) cap_targets+=("$t") ;; esac; done
  for target in "${cap_targets[@]}"; do
    echo "## capacity: $target"
    start_server "$target" 64 capacity
    $BENCH load --protocol "$PROTO" --addr "$ADDR" --keys 1000000 --value-size 100 \
      --connections 8 --label "$target" --workload capacity >/dev/null
    $BENCH items --protocol "$PROTO" --addr "$ADDR" --label "$target" --workload capacity-64MiB \
      >>"$OUT/runs.jsonl"
    stop_server
  done
fi

if [ "$PERF" = 1 ] && perf stat -e raw_syscalls:sys_enter true >/dev/null 2>&1; then
  # One extra run per target and pipeline depth with every syscall of the server counted.
  for target in $TARGETS; do
    start_server "$target" 1024
    $BENCH load --protocol "$PROTO" --addr "$ADDR" "${COMMON[@]}" >/dev/null
    for pl in 1 16; do
      perf stat -x, -e raw_syscalls:sys_enter,context-switches -p "$SERVER_PID" \
        -o "$WORK/perf.txt" -- sleep "$DURATION" &
      perf_pid=$!
      rec=$($BENCH run --protocol "$PROTO" --addr "$ADDR" "${COMMON[@]}" --duration "$DURATION" \
        --pipeline "$pl" --label "$target" --workload "perf-p$pl")
      wait "$perf_pid" || true
      ops=$(sed -n 's/.*"ops":\([0-9]*\).*/\1/p' <<<"$rec")
      sys=$(awk -F, '/raw_syscalls/ {print $1}' "$WORK/perf.txt")
      cs=$(awk -F, '/context-switches/ {print $1}' "$WORK/perf.txt")
      awk -v t="$target" -v p="$pl" -v s="$sys" -v c="$cs" -v o="$ops" 'BEGIN {
        printf "%-14s p%-2s syscalls/op %.3f  ctx-switches/op %.4f  (%d syscalls, %d ops)\n", t, p, s/o, c/o, s, o }' \
        | tee -a "$OUT/perf-syscalls.txt"
    done
    stop_server
  done
fi

probe after
echo "# end: $(uptime)"
echo
echo "Medians over $REPS interleaved repetitions (ratios: median / reference median;"
echo "for latency and syscalls lower is better). Raw records: $OUT/runs.jsonl"
$BIN/shoal-bench table "$OUT/runs.jsonl" --refs memcached,redis | tee "$OUT/table.md"
[ -f "$OUT/perf-syscalls.txt" ] && { echo; cat "$OUT/perf-syscalls.txt"; }
exit 0
