#!/bin/sh
# After removal. deb purge (the environment files are gone then too) also
# removes the user and its group: nothing of the package is left behind.
# rpm erase ($1 = 0) keeps the user, as Fedora's packaging rules ask.
set -e
if [ "$1" = purge ]; then
	if getent passwd ffmpeg-worker >/dev/null; then
		userdel ffmpeg-worker
	fi
	if getent group ffmpeg-worker >/dev/null; then
		groupdel ffmpeg-worker
	fi
fi
if [ -d /run/systemd/system ]; then
	systemctl daemon-reload || true
fi
