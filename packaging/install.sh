#!/usr/bin/env bash
# Install, upgrade or remove ashjobs on an appliance. Idempotent: a second run changes nothing.
#
#   packaging/install.sh [--file dist/ashjobs]     install or upgrade (config, secret and data are kept)
#   dist/install.sh                                the same from the kit `packaging/build` writes to dist/
#   packaging/install.sh --uninstall [--purge]     remove the program and the unit; --purge also removes
#                                                  config, secret, data and the ashjobs user
# Options:
#   --root DIR     install under DIR instead of / (tests, image builds): no user, no systemctl
#   --no-user      do not create the ashjobs user and group
#   --no-systemd   install the unit file but do not run systemctl
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=""
file=""
action=install
purge=0
make_user=1
use_systemd=1

die() { echo "install.sh: $*" >&2; exit 2; }
say() { printf '%-10s %s\n' "$1" "$2"; }

while [ $# -gt 0 ]; do
    case "$1" in
        --root) root=${2:?--root needs a directory}; shift ;;
        --file) file=${2:?--file needs a path}; shift ;;
        --uninstall) action=uninstall ;;
        --purge) purge=1 ;;
        --no-user) make_user=0 ;;
        --no-systemd) use_systemd=0 ;;
        -h|--help) sed -n '2,11s/^# \{0,1\}//p' "$0"; exit 0 ;;
        *) die "unknown option $1 (try --help)" ;;
    esac
    shift
done
[ "$purge" = 1 ] && [ "$action" != uninstall ] && die "--purge goes with --uninstall"
if [ -n "$root" ]; then
    mkdir -p "$root"
    root=$(cd "$root" && pwd)
    [ "$root" = / ] && root=""
fi
if [ -n "$root" ]; then
    make_user=0
    use_systemd=0
fi
[ -d /run/systemd/system ] && command -v systemctl >/dev/null || use_systemd=0
if [ -z "$root" ] && [ "$(id -u)" != 0 ]; then
    die "run as root (or use --root DIR)"
fi

bin="$root/usr/local/bin/ashjobs"
etc="$root/etc/ashjobs"
data="$root/var/lib/ashjobs"
cache="$root/var/cache/ashjobs"
unit="$root/etc/systemd/system/ashjobs.service"
doc="$root/usr/local/share/doc/ashjobs"  # the unit's Documentation= points at its README.md
work_dropin=$(mktemp)
trap 'rm -f "$work_dropin"' EXIT
user_exists() { [ "$make_user" = 1 ] && getent passwd ashjobs >/dev/null; }

# put SRC DEST MODE: copy SRC over DEST atomically unless they are identical. A running daemon keeps its
# old file (the rename leaves its inode alone) until it restarts.
put() {
    if [ -f "$2" ] && cmp -s "$1" "$2"; then
        say unchanged "$2"
        return 1
    fi
    local verb=installed
    [ -e "$2" ] && verb=updated
    mkdir -p "$(dirname "$2")"
    cp "$1" "$2.new.$$"
    chmod "$3" "$2.new.$$"
    mv -f "$2.new.$$" "$2"
    say "$verb" "$2"
}

# dir PATH MODE [OWNER]
dir() {
    if [ -d "$1" ]; then
        say unchanged "$1"
    else
        mkdir -p "$1"
        say created "$1"
    fi
    chmod "$2" "$1"
    if [ -n "${3:-}" ] && user_exists; then chown "$3" "$1"; fi
}

install_all() {
    if [ -z "$file" ]; then  # beside this script (a dist/ kit), else the source tree's build
        file="$here/ashjobs"
        [ -f "$file" ] || file="$here/../dist/ashjobs"
    fi
    [ -f "$file" ] || die "$file: no such file (build it with packaging/build, or pass --file PATH)"
    [ -f "$here/ashjobs.service" ] || die "$here/ashjobs.service: missing (keep install.sh beside it)"

    if [ "$make_user" = 1 ]; then
        if getent group ashjobs >/dev/null; then say unchanged "group ashjobs"; else
            groupadd --system ashjobs; say created "group ashjobs"; fi
        if getent passwd ashjobs >/dev/null; then say unchanged "user ashjobs"; else
            useradd --system --gid ashjobs --home-dir /var/lib/ashjobs --no-create-home \
                --shell /usr/sbin/nologin --comment "ashjobs daemon" ashjobs
            say created "user ashjobs"
        fi
    fi

    local changed=0
    put "$file" "$bin" 0755 && changed=1
    dir "$etc" 0750 root:ashjobs
    dir "$data" 0750 ashjobs:ashjobs
    dir "$cache" 0750 ashjobs:ashjobs

    local config="$etc/ashjobs.toml"
    if [ -e "$config" ]; then
        say kept "$config"
    else
        local example=""
        for candidate in "$here/ashjobs.toml.example" "$here/../ashjobs.toml.example" \
                "$here/../ashjobs/templates/ashjobs.toml.example"; do
            [ -f "$candidate" ] && { example=$candidate; break; }
        done
        [ -n "$example" ] || die "ashjobs.toml.example not found beside $0 (or in the source tree)"
        # The secret lives in /etc/ashjobs (read-only to the service), not in the data dir.
        if grep -q '^\[cluster\]' "$example"; then
            sed '/^\[cluster\]/a secret_file = "/etc/ashjobs/cluster.secret"' "$example" > "$config.new.$$"
        elif grep -q 'secret_file' "$example"; then
            { cat "$example"; printf '\n[cluster]\nsecret_file = "/etc/ashjobs/cluster.secret"\n'; } > "$config.new.$$"
        else
            cp "$example" "$config.new.$$"
        fi
        chmod 0640 "$config.new.$$"
        if user_exists; then chown root:ashjobs "$config.new.$$"; fi
        mv "$config.new.$$" "$config"
        say created "$config"
    fi

    local secret="$etc/cluster.secret"
    if [ -e "$secret" ]; then
        say kept "$secret"
    else
        (umask 077 && od -An -tx1 -N32 /dev/urandom | tr -d ' \n' > "$secret.new.$$" && echo >> "$secret.new.$$")
        if user_exists; then chown ashjobs:ashjobs "$secret.new.$$"; fi
        mv "$secret.new.$$" "$secret"
        say created "$secret (0600; copy it to every node of this cluster)"
    fi

    for readme in "$here/README.md" "$here/../README.md"; do
        if [ -f "$readme" ]; then put "$readme" "$doc/README.md" 0644 || true; break; fi
    done
    put "$here/ashjobs.service" "$unit" 0644 && changed=1
    # A PyInstaller build (an ELF file) runs the daemon as a child of its bootloader, the main PID:
    # systemd must accept that child's notifications.
    local dropin="$unit.d/pyinstaller.conf"
    if [ "$(head -c 4 "$file" | od -An -c | tr -d ' ')" = '177ELF' ]; then
        printf '[Service]\nNotifyAccess=all\n' > "$work_dropin"
        put "$work_dropin" "$dropin" 0644 && changed=1
    elif [ -e "$dropin" ]; then
        rm -rf "$unit.d"
        say removed "$dropin"
        changed=1
    fi
    if [ "$use_systemd" = 1 ]; then
        systemctl daemon-reload
        if systemctl is-enabled --quiet ashjobs.service; then say unchanged "ashjobs.service enabled"; else
            systemctl enable --quiet ashjobs.service; say enabled ashjobs.service; fi
    fi

    echo
    if [ "$use_systemd" = 1 ] && [ "$changed" = 1 ] && systemctl is-active --quiet ashjobs.service; then
        echo "Next: systemctl restart ashjobs    # the running daemon still uses the old version"
    elif [ "$use_systemd" = 1 ]; then
        echo "Next: edit /etc/ashjobs/ashjobs.toml (node name, partition, domains), then"
        echo "      systemctl start ashjobs && systemctl status ashjobs && ashjobs status"
    else
        echo "Next: edit ${etc}/ashjobs.toml (node name, partition, domains), then start the daemon:"
        echo "      ashjobs --config /etc/ashjobs/ashjobs.toml run   (or via systemd: ashjobs.service)"
    fi
}

remove() {
    if [ -e "$1" ]; then rm -rf "$1"; say removed "$1"; else say absent "$1"; fi
}

uninstall_all() {
    if [ "$use_systemd" = 1 ] && [ -e "$unit" ]; then
        systemctl disable --now --quiet ashjobs.service || true
        say stopped ashjobs.service
    fi
    remove "$unit"
    [ -e "$unit.d" ] && remove "$unit.d"
    if [ "$use_systemd" = 1 ]; then systemctl daemon-reload; fi
    remove "$bin"
    [ -e "$doc" ] && remove "$doc"
    if [ "$purge" = 1 ]; then
        remove "$etc"
        remove "$data"
        remove "$cache"
        if [ "$make_user" = 1 ] && getent passwd ashjobs >/dev/null; then
            userdel ashjobs; say removed "user ashjobs"
        fi
        if [ "$make_user" = 1 ] && getent group ashjobs >/dev/null; then
            groupdel ashjobs; say removed "group ashjobs"
        fi
    else
        [ -e "$etc" ] && say kept "$etc (config and cluster secret)"
        [ -e "$data" ] && say kept "$data (job data; --purge removes it)"
    fi
    return 0
}

case "$action" in
    install) install_all ;;
    uninstall) uninstall_all ;;
esac
