#!/bin/bash
# The deployment guide's bare-metal start script, for the Go exporters
# (docker-stats-exporter included: no Python any more). Paths can be moved
# with WORKER_DIR and LOG_DIR, ports with the exporters' port variables
# (CPU_EXPORTER_PORT and so on); GPU=1 starts the GPU exporter too.
#
# Each exporter must listen on its port and answer /health there (any
# status: a missing source is reported on /health, not fatal) within WAIT
# seconds. One that exits (a port already taken) or stays silent is named
# with its log, the ones started are stopped, and the script exits 1.
set -euo pipefail

WORKER_DIR="${WORKER_DIR:-/opt/ffmpeg-rtmp/worker}"
LOG_DIR="${LOG_DIR:-/var/log/ffmpeg-worker}"
WAIT="${WAIT:-15}"
mkdir -p "$LOG_DIR"

names=() ports=() pids=()
start() { # name port
  "$WORKER_DIR/bin/$1" --port "$2" >"$LOG_DIR/$1.log" 2>&1 &
  echo $! >"$LOG_DIR/$1.pid"
  names+=("$1") ports+=("$2") pids+=($!)
}

# listens PID PORT: PID itself holds the listening socket on PORT, not some
# other program that had the port first.
listens() {
  local inode
  for inode in $(awk -v port=":$(printf '%04X' "$2")" \
      'substr($2, length($2) - 4) == port && $4 == "0A" { print $10 }' /proc/net/tcp /proc/net/tcp6 2>/dev/null); do
    if ls -l "/proc/$1/fd" 2>/dev/null | grep -q "socket:\[$inode\]"; then
      return 0
    fi
  done
  return 1
}

# answers PORT: an HTTP status line from /health, over bash's /dev/tcp.
answers() {
  local reply
  { exec 3<>"/dev/tcp/127.0.0.1/$1"; } 2>/dev/null || return 1
  printf 'GET /health HTTP/1.0\r\nHost: localhost\r\n\r\n' >&3
  IFS= read -r -t 2 reply <&3 || true
  exec 3<&-
  [[ $reply == HTTP/* ]]
}

# The guide's ports, or the exporters' own port variables where set.
start cpu-exporter "${CPU_EXPORTER_PORT:-9510}"
start ffmpeg-exporter "${FFMPEG_EXPORTER_PORT:-9506}"
start docker-stats-exporter "${DOCKER_STATS_PORT:-9501}"
if [ "${GPU:-0}" = 1 ]; then
  start gpu-exporter "${GPU_EXPORTER_PORT:-9511}"
fi

failed=0
for i in "${!names[@]}"; do
  name=${names[$i]} port=${ports[$i]} pid=${pids[$i]}
  deadline=$((SECONDS + WAIT))
  until listens "$pid" "$port" && answers "$port"; do
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "$name did not start (exited); see $LOG_DIR/$name.log:" >&2
      tail -n 5 "$LOG_DIR/$name.log" >&2
      failed=1
      break
    fi
    if ((SECONDS >= deadline)); then
      echo "$name did not answer http://127.0.0.1:$port/health within ${WAIT}s; see $LOG_DIR/$name.log" >&2
      failed=1
      break
    fi
    sleep 0.2
  done
done

if ((failed)); then
  for i in "${!pids[@]}"; do
    kill "${pids[$i]}" 2>/dev/null || true
    rm -f "$LOG_DIR/${names[$i]}.pid"
  done
  echo "Worker exporters not started" >&2
  exit 1
fi
echo "Worker exporters started: ${names[*]} (logs and pid files in $LOG_DIR)"
