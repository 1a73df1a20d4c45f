#!/bin/sh
# Compare notifyd's APNs Sender with h2load against the same out-of-process
# APNs sandbox on loopback, and report CPU per push on each side.
#
#   channels/apns/testdata/load.sh            # 200k pushes, 4 connections x 100 streams
#   N=50000 C=2 M=200 channels/apns/testdata/load.sh
#   PLAIN=1 channels/apns/testdata/load.sh    # without write coalescing, for an A/B
#
# Needs h2load (apt-get install -y nghttp2-client); without it only the
# notifyd side is measured.
set -eu
cd "$(dirname "$0")/../../.."
NOTIFYD_APNS_LOAD=1 \
NOTIFYD_APNS_LOAD_N="${N:-200000}" \
NOTIFYD_APNS_LOAD_C="${C:-4}" \
NOTIFYD_APNS_LOAD_M="${M:-100}" \
NOTIFYD_APNS_LOAD_PLAIN="${PLAIN:-}" \
exec go test -run '^TestAPNsLoad$' -v -count=1 ./channels/apns
