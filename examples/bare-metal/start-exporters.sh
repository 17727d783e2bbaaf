#!/bin/bash
# The deployment guide's bare-metal start script, for the Go exporters
# (docker-stats-exporter included: no Python any more). Paths can be moved
# with WORKER_DIR and LOG_DIR; GPU=1 starts the GPU exporter too.
set -e

WORKER_DIR="${WORKER_DIR:-/opt/ffmpeg-rtmp/worker}"
LOG_DIR="${LOG_DIR:-/var/log/ffmpeg-worker}"
mkdir -p "$LOG_DIR"

start() { # name args...
  local name=$1; shift
  "$WORKER_DIR/bin/$name" "$@" >"$LOG_DIR/$name.log" 2>&1 &
  echo $! >"$LOG_DIR/$name.pid"
}

start cpu-exporter --port 9510
start ffmpeg-exporter --port 9506
start docker-stats-exporter --port 9501
if [ "${GPU:-0}" = 1 ]; then
  start gpu-exporter --port 9511
fi

echo "Worker exporters started (logs and pid files in $LOG_DIR)"
