#!/usr/bin/env bash
# The certificate that closes SeaweedFS's S3 gRPC port to everyone (compose init.sh, faasd install.sh and
# Kubernetes secrets.sh call it):  deploy/seaweedfs/grpc-cert.sh DIR   -> DIR/s3_grpc.crt, DIR/s3_grpc.key
#
# Why: the S3 gateway serves a gRPC API on its S3 bind address (port 18333 beside 8333; weed/command/s3.go
# binds it with the same -s3.ip.bind, so it cannot listen on localhost alone) whose SeaweedS3IamCache service
# (weed/pb/s3.proto; weed/s3api/s3api_server_grpc.go PutIdentity) installs an S3 identity with no
# authentication. Anyone who reaches the port adds an admin key and rewrites the model artifacts
# (tests/test_seaweedfs_binding.py does it with the real binary). With WEED_GRPC_S3_CERT/_KEY and WEED_GRPC_CA
# set (viper reads WEED_* for security.toml's keys: weed/util/config.go GetViper), that server requires a
# client certificate signed by the CA (weed/security/tls.go LoadServerTLS: RequireClientCert). The CA is this
# self-signed certificate and its key never leaves the SeaweedFS container, so no client holds one: nothing
# PowerSense runs calls that API (it exists for the filer's IAM propagation, which PowerSense does not use;
# the S3 identity comes from AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY).
#
# Written once: an existing pair is kept (idempotent, like every other secret). Needs openssl.
set -euo pipefail

dir="${1:?usage: grpc-cert.sh DIR}"
crt="$dir/s3_grpc.crt" key="$dir/s3_grpc.key"
if [[ -s "$crt" && -s "$key" ]]; then
  exit 0
fi
command -v openssl >/dev/null || { echo "grpc-cert.sh: openssl is needed (apt-get install -y openssl)" >&2; exit 1; }
mkdir -p "$dir"
tmp="$(mktemp -d "$dir/.s3_grpc.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
# RSA and -subj/-addext work with OpenSSL 1.1.1+, 3.x and LibreSSL 3.x (macOS)
(umask 077 && openssl req -x509 -newkey rsa:3072 -nodes -sha256 -days 36500 \
  -subj "/CN=powersense-seaweedfs-s3-grpc" -addext "subjectAltName=DNS:seaweedfs" \
  -keyout "$tmp/s3_grpc.key" -out "$tmp/s3_grpc.crt" 2>/dev/null)
mv "$tmp/s3_grpc.key" "$key"
mv "$tmp/s3_grpc.crt" "$crt"
echo "created $crt and $key (SeaweedFS's S3 gRPC port: no client certificate, no access)"
