#!/bin/sh
# Creates the etcd user a Tether daemon connects as, with a role that lets it read and write
# exactly what it needs, so that one member's credential can speak only for that member.
#
#   deploy/etcd/tether-etcd-user.sh gateway  ID PASSWORD_FILE   # gateway ID
#   deploy/etcd/tether-etcd-user.sh node     ID PASSWORD_FILE   # echo node ID
#   deploy/etcd/tether-etcd-user.sh ipconfig NAME PASSWORD_FILE # an ipconfig replica
#
# | kind     | role                  | may write                   | may read            |
# |----------|-----------------------|-----------------------------|---------------------|
# | gateway  | tether-gateway-ID     | /tether/gateways/ID (only)  | /tether/nodes/*     |
# | node     | tether-node-ID        | /tether/nodes/ID (only)     | -                   |
# | ipconfig | tether-ipconfig       | -                           | /tether/gateways/*  |
#
# The user is named ID (NAME for ipconfig) and its password is the first line of
# PASSWORD_FILE, read by etcdctl from stdin (never on a command line). Give the daemon the
# same user and file: etcd_user = "ID", etcd_password_file = "PASSWORD_FILE".
#
# etcdctl takes the cluster and the administrator from the environment:
#   ETCDCTL_ENDPOINTS=http://etcd-1:2379 ETCDCTL_USER=root ETCDCTL_PASSWORD=... (or
#   ETCDCTL_USER=root:password). Authentication must be on (doc/operations.md, Security:
#   `etcdctl user add root`, `etcdctl auth enable`). Running it again for the same member
#   resets its password and permissions.
set -eu

usage() { echo "usage: $0 gateway|node|ipconfig ID PASSWORD_FILE" >&2; exit 2; }
[ $# -eq 3 ] || usage
kind=$1 id=$2 password_file=$3
[ -r "$password_file" ] || { echo "$0: cannot read $password_file" >&2; exit 1; }
case $id in
    ''|*[!A-Za-z0-9._~:@+=-]*) echo "$0: '$id' is not a simple member id" >&2; exit 1 ;;
esac

case $kind in
    gateway)  role=tether-gateway-$id ;;
    node)     role=tether-node-$id ;;
    ipconfig) role=tether-ipconfig ;;
    *) usage ;;
esac

# The user: created, or its password reset.
if etcdctl user get "$id" >/dev/null 2>&1; then
    etcdctl user passwd "$id" --interactive=false <"$password_file" >/dev/null
else
    etcdctl user add "$id" --interactive=false <"$password_file" >/dev/null
fi

# The role, from scratch.
etcdctl role delete "$role" >/dev/null 2>&1 || true
etcdctl role add "$role" >/dev/null
case $kind in
    gateway)
        # Exactly its own key: no --prefix, so gw-1 cannot write gw-10 either.
        etcdctl role grant-permission "$role" readwrite "/tether/gateways/$id" >/dev/null
        etcdctl role grant-permission "$role" --prefix=true read /tether/nodes/ >/dev/null
        ;;
    node)
        etcdctl role grant-permission "$role" readwrite "/tether/nodes/$id" >/dev/null
        ;;
    ipconfig)
        etcdctl role grant-permission "$role" --prefix=true read /tether/gateways/ >/dev/null
        ;;
esac
etcdctl user grant-role "$id" "$role" >/dev/null
echo "etcd user $id: role $role"
