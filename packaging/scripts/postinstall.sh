#!/bin/sh
# After install or upgrade (deb: configure; rpm: $1 = 1 or 2): the user the
# units run as, in the groups that own /dev/nvidia* and the Docker socket
# where this host has them (a podman host has no docker group: skipped).
set -e
if ! getent group ffmpeg-worker >/dev/null; then
	groupadd --system ffmpeg-worker
fi
if ! getent passwd ffmpeg-worker >/dev/null; then
	useradd --system --gid ffmpeg-worker --no-create-home --home-dir /opt/ffmpeg-rtmp/worker \
		--shell /usr/sbin/nologin --comment "FFmpeg RTMP worker exporters" ffmpeg-worker
fi
for group in video render docker; do
	if getent group "$group" >/dev/null; then
		usermod -aG "$group" ffmpeg-worker
	fi
done
# Units are enabled by the operator (systemctl enable --now); an upgrade
# restarts the ones running.
if [ -d /run/systemd/system ]; then
	systemctl daemon-reload
	systemctl try-restart ffmpeg-worker-exporter.service ffmpeg-cpu-exporter.service ffmpeg-gpu-exporter.service \
		ffmpeg-stats-exporter.service ffmpeg-docker-stats-exporter.service || true
fi
