#!/usr/bin/env bash
# A local Orthanc DICOMweb server to try `medtasks predict --input dicomweb:... --store ...` by hand, configured as
# the tests' server (tests/orthanc.py): 127.0.0.1 only, DIMSE off, authentication on, the DICOMweb plugin at
# /dicom-web/, storage in a temporary folder that is deleted when the server stops (Ctrl-C).
#
#   scripts/orthanc_test_server.sh [PORT]          # default 8042; needs Debian's orthanc + orthanc-dicomweb
#
# It prints the environment variables to export; the password is random unless ORTHANC_TEST_PASSWORD is set.
# Upload DICOM files with:  curl -u "$MEDTASKS_DICOMWEB_USER:$MEDTASKS_DICOMWEB_PASSWORD" \
#                                -H 'Content-Type: application/dicom' --data-binary @file.dcm http://127.0.0.1:PORT/instances
set -euo pipefail
port="${1:-8042}"
orthanc="$(command -v Orthanc || true)"
[ -n "$orthanc" ] || { [ -x /usr/sbin/Orthanc ] && orthanc=/usr/sbin/Orthanc; } || true
plugin=/usr/share/orthanc/plugins/libOrthancDicomWeb.so
if [ -z "$orthanc" ] || [ ! -e "$plugin" ]; then
  echo "Orthanc or its DICOMweb plugin is missing: apt-get install orthanc orthanc-dicomweb (as root)" >&2
  exit 1
fi
user=medtasks
password="${ORTHANC_TEST_PASSWORD:-$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')}"
dir="$(mktemp -d -t medtasks-orthanc-XXXXXX)"
pid=""
# On exit, Ctrl-C or a TERM: stop Orthanc (TERM, then KILL after 10 s), then delete its storage.
cleanup() {
  if [ -n "$pid" ] && kill "$pid" 2>/dev/null; then
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
  fi
  rm -rf "$dir"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
umask 077
cat > "$dir/orthanc.json" <<EOF
{
  "Name": "medtasks-local",
  "StorageDirectory": "$dir/db",
  "IndexDirectory": "$dir/db",
  "HttpPort": $port,
  "DicomServerEnabled": false,
  "RemoteAccessAllowed": false,
  "AuthenticationEnabled": true,
  "RegisteredUsers": {"$user": "$password"},
  "Plugins": ["$plugin"],
  "DicomWeb": {"Enable": true, "Root": "/dicom-web/", "EnableWado": false},
  "OrthancExplorerEnabled": true,
  "WebDavEnabled": false,
  "SaveJobs": false
}
EOF
cat <<EOF
Orthanc on http://127.0.0.1:$port (DICOMweb root http://127.0.0.1:$port/dicom-web); Ctrl-C stops it.
  export MEDTASKS_DICOMWEB_USER=$user MEDTASKS_DICOMWEB_PASSWORD=$password
  medtasks predict <task> --run <run> --input dicomweb:http://127.0.0.1:$port/dicom-web/studies/<StudyInstanceUID> \\
      --store http://127.0.0.1:$port/dicom-web
EOF
"$orthanc" "$dir/orthanc.json" &
pid=$!
wait "$pid"
