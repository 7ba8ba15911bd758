#!/bin/sh
# Make the certificates of the compose cluster (docs/deploy.md, "Certificates"):
#   ./certs/ca/                 both CAs and every issued pair (keep it off the containers)
#   ./certs/<service>/          what that container mounts: the two CA certificates and its
#                               own pair, nothing else
# and ./s3-credentials.toml (one access key for the user s3user) if there is none.
# Run it once, where `keelfs` is installed (or: KEELFS="docker run --rm -v $PWD:/w -w /w
# --entrypoint keelfs keelfs:latest" ./make-certs.sh). The containers run as uid 10001: as
# root, this script gives them the files; otherwise it prints the chown to run.
set -eu
cd "$(dirname "$0")"
KEELFS=${KEELFS:-keelfs}
ca=certs/ca
[ -f "$ca/peer-ca.crt" ] || $KEELFS certs init "$ca"

node() {  # node SERVICE ROLE/ID: a certificate naming the service (what the others dial)
  service=$1 name=$2
  file="$(echo "$name" | tr / -)"
  [ -f "$ca/$file.crt" ] || $KEELFS certs issue "$ca" "$name" --host "$service" --host localhost
  install -d -m 0700 "certs/$service"
  cp "$ca/peer-ca.crt" "$ca/client-ca.crt" "$ca/$file.crt" "$ca/$file.key" "certs/$service/"
}
user() {  # user SERVICE NAME [--admin]: a user's certificate for a client container
  service=$1 name=$2
  shift 2
  [ -f "$ca/user-$name.crt" ] || $KEELFS certs issue "$ca" "user/$name" "$@"
  install -d -m 0700 "certs/$service"
  cp "$ca/peer-ca.crt" "$ca/user-$name.crt" "$ca/user-$name.key" "certs/$service/"
}

for i in 1 2 3; do node "config-$i" "config/$i"; done
for k in 1 2; do
  for j in 1 2 3; do node "master-$k-$j" "master/$k$j"; done
done
for i in 1 2 3; do node "chunk-$i" "chunkserver/cs-$i"; done
user s3 s3user
user admin admin --admin

if [ ! -f s3-credentials.toml ]; then
  secret=$(od -An -N24 -tx1 /dev/urandom | tr -d ' \n')
  umask 077
  printf '[access_keys.KEELFSCOMPOSE01]\nsecret = "%s"\nuser = "s3user"\n' "$secret" \
    > s3-credentials.toml
  echo "s3-credentials.toml: access key KEELFSCOMPOSE01 for s3user"
fi

if [ "$(id -u)" = 0 ]; then
  chown -R 10001:10001 certs/config-* certs/master-* certs/chunk-* certs/s3 certs/admin \
    s3-credentials.toml
else
  echo "the containers run as uid 10001: sudo chown -R 10001:10001 $(pwd)/certs/*-* \\"
  echo "  $(pwd)/certs/s3 $(pwd)/certs/admin $(pwd)/s3-credentials.toml"
fi
