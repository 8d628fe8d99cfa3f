#!/usr/bin/env bash
# The gateway's image, its systemd unit and its compose file, checked as far as this machine
# allows. Used by .ci/run. No image registry is reachable, so:
#  - the runtime's base is made from Debian's packages (mmdebstrap --variant=minbase bookworm)
#    and imported into podman under the name the Dockerfile's BASE argument is given;
#  - the binary is the one cargo builds here, handed to the Dockerfile's `runtime` stage as
#    the `binary` build context (the `build` stage, and its Rust image, are never used);
#  - `podman build` runs the Dockerfile's RUN with --isolation=chroot (an OCI runtime is
#    refused here: crun's setrlimit, and cgroups in hybrid mode);
#  - the image is exported, and its entrypoint run under chroot as the image's user, with the
#    image's environment, in a network namespace of its own (so that the image's 0.0.0.0:8080
#    is nobody else's port): asked for its health URL, the image's HEALTHCHECK command and one
#    chat completion, then stopped with SIGTERM, which must exit 0;
#  - then `podman run` does the same with runc (crun is refused here, see below), in that
#    namespace: `podman healthcheck run`, one completion, `podman stop` exits 0.
# The base's tarball is kept under the target folder: made once (about 2 minutes), imported
# again when podman has lost it.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf -- '--- %s (%s)\n' "$*" "$(date +%T)"; }
fail() { printf 'image: %s\n' "$*" >&2; exit 1; }

target=${CARGO_TARGET_DIR:-target}
base=${STREAMFLIGHT_IMAGE_BASE:-localhost/streamflight-base:bookworm}
base_tar=$target/image/base-bookworm-minbase.tar
image=localhost/streamflight-gateway:check-$$
netns=streamflight-image-$$
work=$(mktemp -d)
root=$work/root
gateway_pid=
container=
started=$SECONDS

cleanup() {
    if [ -n "$gateway_pid" ] && kill -0 "$gateway_pid" 2>/dev/null; then
        kill -KILL "$gateway_pid" 2>/dev/null || true
    fi
    if mountpoint -q "$root/proc" 2>/dev/null; then umount -l "$root/proc" || true; fi
    if mountpoint -q "$root" 2>/dev/null; then umount -l "$root" || true; fi
    if [ -n "$container" ]; then podman rm -f "$container" >/dev/null 2>&1 || true; fi
    ip netns delete "$netns" 2>/dev/null || true
    podman rmi -f "$image" >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT

step "tools: mmdebstrap, podman, runc, systemd-analyze, ip, curl, python3-yaml (Debian's packages, installed when missing)"
missing=()
command -v mmdebstrap >/dev/null || missing+=(mmdebstrap)
command -v podman >/dev/null || missing+=(podman)
command -v runc >/dev/null || missing+=(runc)
command -v systemd-analyze >/dev/null || missing+=(systemd)
command -v ip >/dev/null || missing+=(iproute2)
command -v curl >/dev/null || missing+=(curl)
/usr/bin/python3 -c 'import yaml' 2>/dev/null || missing+=(python3-yaml)
if [ ${#missing[@]} -gt 0 ]; then
    echo "installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive timeout 600 apt-get install -y -qq "${missing[@]}" >/dev/null
fi
podman --version

step "the compose file parses, and names three gateways on one Redis"
/usr/bin/python3 - compose.yaml <<'PY'
import sys, yaml
services = yaml.safe_load(open(sys.argv[1]))["services"]
fleet = [name for name, s in services.items() if "STREAMFLIGHT_REDIS" in (s.get("environment") or {})]
assert len(fleet) == 3, f"the gateways on Redis: {fleet}"
assert "redis" in services, "no redis service"
secrets = {services[name]["environment"]["STREAMFLIGHT_FLEET_SECRET"] for name in fleet}
assert len(secrets) == 1, "the gateways do not share one fleet secret"
print("compose.yaml:", ", ".join(services))
PY

step "the binary as shipped (cargo build --profile dist -p streamflight-gateway: LTO)"
timeout 1200 cargo build --profile dist --locked -p streamflight-gateway
binary=$(realpath "$target/dist/streamflight-gateway")
"$binary" --version

step "the systemd unit: systemd-analyze verify, and its exposure (security --offline)"
# verify wants ExecStart's binary where the unit says; this copy points it at the one just built.
mkdir "$work/unit"
sed "s|^ExecStart=/usr/local/bin/streamflight-gateway\$|ExecStart=$binary|" \
    deploy/streamflight-gateway.service >"$work/unit/streamflight-gateway.service"
grep -q "^ExecStart=$binary\$" "$work/unit/streamflight-gateway.service" \
    || fail "the unit's ExecStart is not /usr/local/bin/streamflight-gateway"
systemd-analyze verify "$work/unit/streamflight-gateway.service"
# 0-100, as `systemd-analyze security` prints it divided by 10: 20 is "2.0 OK".
systemd-analyze security --offline=yes --threshold=20 "$work/unit/streamflight-gateway.service" | tail -1

step "the runtime's base: $base"
if podman image exists "$base"; then
    echo "already in podman"
else
    if [ ! -s "$base_tar" ]; then
        mkdir -p "$(dirname "$base_tar")"
        t=$SECONDS
        timeout 900 mmdebstrap --quiet --variant=minbase --format=tar bookworm "$base_tar.part"
        mv "$base_tar.part" "$base_tar"
        echo "mmdebstrap: $((SECONDS - t)) s"
    fi
    timeout 300 podman import --quiet "$base_tar" "$base" >/dev/null
fi

step "podman build --target runtime, the binary from the host"
mkdir "$work/binary" "$work/context"
cp "$binary" "$work/binary/streamflight-gateway"
# The context is an empty folder: the runtime stage copies only from `binary`.
timeout 900 podman build --quiet --isolation=chroot --format docker --target runtime \
    --build-arg BASE="$base" --build-context binary="$work/binary" \
    -f Dockerfile -t "$image" "$work/context" >/dev/null
podman image inspect "$image" >"$work/inspect.json"

# What the image says: its user, environment, entrypoint and command, health check.
/usr/bin/python3 - "$work/inspect.json" "$work" <<'PY'
import json, os, sys
image = json.load(open(sys.argv[1]))[0]
config, out = image["Config"], sys.argv[2]
health = image.get("Healthcheck") or config.get("Healthcheck") or {}
test = health.get("Test") or []
assert test[:1] == ["CMD-SHELL"] and len(test) == 2, f"the image's HEALTHCHECK: {test}"
user = config.get("User") or ""
assert user and user.split(":")[0] not in ("0", "root"), f"the image runs as {user!r}"
argv = (config.get("Entrypoint") or []) + (config.get("Cmd") or [])
assert argv, "the image names no command"
with open(f"{out}/user", "w") as f: f.write(user)
with open(f"{out}/env", "w") as f: f.write("".join(e + "\n" for e in config.get("Env") or []))
with open(f"{out}/argv", "w") as f: f.write("".join(a + "\n" for a in argv))
with open(f"{out}/health", "w") as f: f.write(test[1])
print("user", user, "| command", " ".join(argv), "| health check:", test[1])
PY
user=$(cat "$work/user")
mapfile -t image_env <"$work/env"
mapfile -t argv <"$work/argv"
health_cmd=$(cat "$work/health")
image_var() { # NAME: its value in the image's environment
    local e
    for e in "${image_env[@]}"; do [ "${e%%=*}" = "$1" ] && { printf '%s' "${e#*=}"; return; }; done
}
listen=$(image_var STREAMFLIGHT_LISTEN)
health_url=$(image_var HEALTHCHECK_URL)
[ -n "$listen" ] && [ -n "$health_url" ] || fail "the image sets no STREAMFLIGHT_LISTEN or HEALTHCHECK_URL"
port=${listen##*:}

step "the image's file system, exported"
# On a tmpfs: its thousands of files go at once (an rm -rf of them on this disk took 20 s).
mkdir "$root"
mount -t tmpfs -o size=2g,mode=0755 tmpfs "$root"
container=$(timeout 60 podman create --no-healthcheck "$image")
timeout 300 podman export "$container" | tar -x -C "$root"
podman rm "$container" >/dev/null && container=
du -sh "$root" | sed 's/\t.*/ unpacked/'
# What a container runtime would give it: /proc, and the usual devices.
mount -t proc proc "$root/proc"
for dev in null:1:3 zero:1:5 random:1:8 urandom:1:9; do
    IFS=: read -r name major minor <<<"$dev"
    [ -e "$root/dev/$name" ] || mknod -m 0666 "$root/dev/$name" c "$major" "$minor"
done

step "the image's command under chroot as $user, in a network namespace of its own"
ip netns add "$netns"
ip -n "$netns" link set lo up
await_ready() { # ALIVE-COMMAND: waits up to 20 s for the health URL, in the namespace
    local _
    for _ in $(seq 1 100); do
        if ip netns exec "$netns" curl -fsS --max-time 2 -o /dev/null "$health_url" 2>/dev/null; then
            echo "$health_url: $(ip netns exec "$netns" curl -sS --max-time 5 "$health_url")"
            return 0
        fi
        $1 2>/dev/null || { echo "the gateway exited at start"; return 1; }
        sleep 0.2
    done
    echo "$health_url did not answer within 20 s"
    return 1
}
ask_completion() { # one chat completion on the image's port, from the simulated model
    echo "one chat completion, from the simulated model"
    ip netns exec "$netns" curl -sS --max-time 30 "http://127.0.0.1:$port/v1/chat/completions" \
        -H 'content-type: application/json' \
        -d '{"messages":[{"role":"user","content":"hello from the image"}]}' >"$work/answer.json"
    /usr/bin/python3 - "$work/answer.json" <<'PY'
import json, sys
answer = json.load(open(sys.argv[1]))
assert answer.get("object") == "chat.completion", answer
choice = answer["choices"][0]
assert choice["message"]["content"], answer
assert choice["finish_reason"] in ("stop", "length"), answer
print(f"{answer['model']}: {len(choice['message']['content'])} characters, {choice['finish_reason']}")
PY
}
log=$work/gateway.log
# ip netns exec, env and chroot each exec the next: $! is the gateway's own process.
ip netns exec "$netns" env -i "${image_env[@]}" chroot --userspec="$user" "$root" "${argv[@]}" \
    >"$log" 2>&1 &
gateway_pid=$!
await_ready "kill -0 $gateway_pid" || { cat "$log"; fail "the gateway is not ready"; }
owner=$(stat -c %u "/proc/$gateway_pid")
[ "$owner" = "${user%%:*}" ] || fail "the gateway runs as uid $owner, not the image's $user"

echo "the image's HEALTHCHECK, in the image: $health_cmd"
timeout 10 ip netns exec "$netns" env -i "${image_env[@]}" chroot --userspec="$user" "$root" \
    /bin/sh -c "$health_cmd" || fail "the image's health check failed"

ask_completion

echo "SIGTERM: the gateway drains and exits 0"
kill -TERM "$gateway_pid"
for _ in $(seq 1 200); do
    kill -0 "$gateway_pid" 2>/dev/null || break
    sleep 0.2
done
kill -0 "$gateway_pid" 2>/dev/null && { cat "$log"; fail "still running 40 s after SIGTERM"; }
status=0
wait "$gateway_pid" || status=$?
gateway_pid=
[ "$status" = 0 ] || { cat "$log"; fail "the gateway exited $status after SIGTERM"; }
tail -n 3 "$log"

step "podman run, with runc, in the same network namespace"
# crun (podman's default here) is refused: setrlimit of its default RLIMIT_NOFILE and
# RLIMIT_NPROC (raising them is not allowed in this sandbox), then cgroups in hybrid mode.
# runc takes hybrid cgroups, and explicit limits below this shell's go through.
nproc_limit=4096
[ "$(ulimit -u)" = unlimited ] || [ "$(ulimit -u)" -gt 4096 ] || nproc_limit=$(($(ulimit -u) / 2))
# podman says at each step that it cannot reach systemd to time the health checks (there is
# no systemd here): harmless, and left out of the log.
no_timer() { "$@" 2> >(grep -v 'systemd connection' >&2); }
container=$(no_timer timeout 60 podman run --detach --runtime runc --health-interval=disable \
    --ulimit "nofile=$(ulimit -n):$(ulimit -Hn)" --ulimit "nproc=$nproc_limit:$nproc_limit" \
    --network "ns:/run/netns/$netns" "$image")
await_ready "podman container exists $container" || { podman logs "$container"; fail "the container is not ready"; }
timeout 30 podman healthcheck run "$container" >/dev/null \
    || { podman logs "$container"; fail "podman healthcheck run: unhealthy"; }
echo "podman healthcheck run: healthy"
ask_completion
no_timer timeout 60 podman stop --time 40 "$container" >/dev/null
status=$(podman inspect --format '{{.State.ExitCode}}' "$container")
[ "$status" = 0 ] || { podman logs "$container"; fail "podman stop: the gateway exited $status"; }
echo "podman stop: exited 0"
no_timer podman rm "$container" >/dev/null && container=

echo "the image, the unit and the compose file check out ($((SECONDS - started)) s)"
