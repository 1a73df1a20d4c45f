#!/bin/sh
# Compare notifyd's APNs Sender with h2load against the same out-of-process
# APNs sandbox on loopback, and report CPU per push on each side.
#
#   channels/apns/testdata/load.sh                 # 200k pushes, 4 connections x 100 streams, TransportDirect
#   N=100000 channels/apns/testdata/load.sh        # the issue's measurement
#   TRANSPORT=apns2 channels/apns/testdata/load.sh # the apns2.Client path, for an A/B
#   TRANSPORT=apns2 PLAIN=1 channels/apns/testdata/load.sh  # apns2 without write coalescing
#   N=50000 C=2 M=200 channels/apns/testdata/load.sh
#
# Needs h2load (apt-get install -y nghttp2-client); without it only the
# notifyd side is measured. The machine is shared: run it a few times.
set -eu
cd "$(dirname "$0")/../../.."
NOTIFYD_APNS_LOAD=1 \
NOTIFYD_APNS_LOAD_N="${N:-200000}" \
NOTIFYD_APNS_LOAD_C="${C:-4}" \
NOTIFYD_APNS_LOAD_M="${M:-100}" \
NOTIFYD_APNS_LOAD_TRANSPORT="${TRANSPORT:-direct}" \
NOTIFYD_APNS_LOAD_PLAIN="${PLAIN:-}" \
exec go test -run '^TestAPNsLoad$' -v -count=1 ./channels/apns
