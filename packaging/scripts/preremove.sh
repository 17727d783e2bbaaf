#!/bin/sh
# Before removal (deb: remove; rpm: $1 = 0), not before an upgrade: stop and
# disable the units, so no enablement link outlives the package.
set -e
case "$1" in
remove | 0)
	units="ffmpeg-worker-exporter.service ffmpeg-cpu-exporter.service ffmpeg-gpu-exporter.service ffmpeg-stats-exporter.service ffmpeg-docker-stats-exporter.service"
	if [ -d /run/systemd/system ]; then
		systemctl stop $units || true
	fi
	# Works without a running systemd too: it only removes links.
	systemctl disable $units >/dev/null 2>&1 || true
	;;
esac
