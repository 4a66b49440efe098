#!/usr/bin/env bash
# Upgrades phr-gateway without dropping a request: starts the slot that is not running
# (blue <-> green) with the binary and configuration now installed; it takes the
# listening sockets over from the running slot, which drains and exits by itself.
# Run after installing the new binary:  deploy/systemd/upgrade.sh
set -euo pipefail
if systemctl is-active --quiet phr-gateway@blue; then old=blue new=green
elif systemctl is-active --quiet phr-gateway@green; then old=green new=blue
else echo "no phr-gateway slot is running; start one: systemctl enable --now phr-gateway@blue" >&2; exit 1
fi
# check-config runs first (ExecStartPre): a bad configuration never takes over.
systemctl start "phr-gateway@$new"
# The old slot exits once its in-flight requests are done (limits.drain_timeout at most).
for _ in $(seq 60); do
  systemctl is-active --quiet "phr-gateway@$old" || break
  sleep 1
done
if systemctl is-active --quiet "phr-gateway@$old"; then
  echo "phr-gateway@$old still runs: the hand-over did not happen (journalctl -u phr-gateway@$new)" >&2
  exit 1
fi
# Start the new slot at boot from now on.
systemctl enable --quiet "phr-gateway@$new"
systemctl disable --quiet "phr-gateway@$old"
echo "phr-gateway: $old -> $new"
