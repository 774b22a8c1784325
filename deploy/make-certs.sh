#!/bin/sh
# Certificates for the broker's TLS listener (deploy/compose.yaml's broker, deploy/mosquitto.conf): a
# private CA and a broker certificate it signs. Kiosks (and a skeletond on another machine) trust ca.crt
# and verify the broker's name against the certificate.
#
#   deploy/make-certs.sh [OUT_DIR] [NAME ...]
#
# OUT_DIR   default deploy/mosquitto/certs (where compose.yaml mounts it from; git ignores it)
# NAME      each DNS name or IPv4 address kiosks use to reach the broker (e.g. gym-edge.local 192.168.1.20);
#           mosquitto (the compose service), localhost and 127.0.0.1 are always included.
#
# Writes ca.crt, ca.key (keep it off the broker if you can: it signs new broker certificates), broker.crt
# and broker.key (0600). An existing CA is reused, so re-running it to add a name keeps kiosks' trust.
# Mosquitto's container runs as uid 1883: give it the key (sudo chown 1883 OUT_DIR/broker.key).
# Environment: SKELETON_CERT_DAYS (broker certificate lifetime, default 825 days).
set -eu

out=${1:-"$(dirname "$0")/mosquitto/certs"}
[ $# -gt 0 ] && shift
days=${SKELETON_CERT_DAYS:-825}
command -v openssl >/dev/null 2>&1 || { echo "make-certs.sh: openssl is needed (apt-get install openssl)" >&2; exit 1; }

san="DNS:mosquitto,DNS:localhost,IP:127.0.0.1"
for name in "$@"; do
    if printf '%s' "$name" | grep -Eq '^[0-9]+\.[0-9]+\.[0-9]+\.[0-9]+$'; then
        san="$san,IP:$name"
    else
        san="$san,DNS:$name"
    fi
done

mkdir -p "$out"
cd "$out"
umask 077
if [ ! -f ca.key ]; then
    openssl req -x509 -newkey rsa:3072 -nodes -keyout ca.key -out ca.crt -days 3650 \
        -subj "/CN=skeleton-v2 broker CA" -addext "basicConstraints=critical,CA:TRUE" \
        -addext "keyUsage=critical,keyCertSign,cRLSign"
fi
openssl req -newkey rsa:2048 -nodes -keyout broker.key -out broker.csr -subj "/CN=skeleton-v2 broker"
printf 'subjectAltName=%s\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n' "$san" > broker.ext
openssl x509 -req -in broker.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out broker.crt -days "$days" \
    -extfile broker.ext
rm -f broker.csr broker.ext
chmod 644 ca.crt broker.crt
chmod 600 ca.key broker.key
echo "make-certs.sh: $(pwd)/broker.crt for $san, signed by $(pwd)/ca.crt"
