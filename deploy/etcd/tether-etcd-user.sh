#!/bin/sh
# Creates the etcd user a Tether daemon connects as, with a role that lets it read and write
# exactly what it needs, so that one member's credential can speak only for that member.
#
#   deploy/etcd/tether-etcd-user.sh gateway  ID PASSWORD_FILE [USER]  # gateway ID
#   deploy/etcd/tether-etcd-user.sh node     ID PASSWORD_FILE [USER]  # echo node ID
#   deploy/etcd/tether-etcd-user.sh ipconfig NAME PASSWORD_FILE [USER] # an ipconfig replica
#
# | kind     | role                  | may write                   | may read            |
# |----------|-----------------------|-----------------------------|---------------------|
# | gateway  | tether-gateway-ID     | /tether/gateways/ID (only)  | /tether/nodes/*     |
# | node     | tether-node-ID        | /tether/nodes/ID (only)     | -                   |
# | ipconfig | tether-ipconfig       | -                           | /tether/gateways/*  |
#
# The user is named USER (default: ID, or NAME for ipconfig) and its password is the first
# line of PASSWORD_FILE, read by etcdctl from stdin (never on a command line). Give the
# daemon the same user and file: etcd_user = "USER", etcd_password_file = "PASSWORD_FILE".
# A second USER for the same member gets the same role: that is how a credential rotates
# with no gap (doc/operations.md, Security); `etcdctl user delete OLD` ends the old one.
#
# etcdctl takes the cluster and the administrator from the environment:
#   ETCDCTL_ENDPOINTS=http://etcd-1:2379 ETCDCTL_USER=root ETCDCTL_PASSWORD=... (or
#   ETCDCTL_USER=root:password). Authentication must be on (doc/operations.md, Security:
#   `etcdctl user add root`, `etcdctl auth enable`). Running it again for the same member
#   resets its password and permissions.
set -eu

usage() { echo "usage: $0 gateway|node|ipconfig ID PASSWORD_FILE [USER]" >&2; exit 2; }
[ $# -eq 3 ] || [ $# -eq 4 ] || usage
kind=$1 id=$2 password_file=$3 user=${4:-$2}
[ -r "$password_file" ] || { echo "$0: cannot read $password_file" >&2; exit 1; }
for name in "$id" "$user"; do
    case $name in
        ''|*[!A-Za-z0-9._~:@+=-]*) echo "$0: '$name' is not a simple member id" >&2; exit 1 ;;
    esac
done

case $kind in
    gateway)  role=tether-gateway-$id ;;
    node)     role=tether-node-$id ;;
    ipconfig) role=tether-ipconfig ;;
    *) usage ;;
esac

# The user: created, or its password reset (which ends its current tokens).
if etcdctl user get "$user" >/dev/null 2>&1; then
    etcdctl user passwd "$user" --interactive=false <"$password_file" >/dev/null
else
    etcdctl user add "$user" --interactive=false <"$password_file" >/dev/null
fi

# The role: created if missing, its permissions granted (granting again changes nothing).
etcdctl role get "$role" >/dev/null 2>&1 || etcdctl role add "$role" >/dev/null
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
etcdctl user grant-role "$user" "$role" >/dev/null 2>&1 || etcdctl user get "$user" | grep -qx "Roles: .*$role.*"
echo "etcd user $user: role $role"
