#!/usr/bin/env bash
# Build the CPU image from the Dockerfile and smoke-test it against this checkout.
#   bash scripts/docker.sh                 # base image (if needed), build, smoke tests
#   bash scripts/docker.sh --skip-build    # smoke tests of the image already built
# Needs a Docker engine; when the base image (BASE, default debian:bookworm-slim) is neither
# present nor pullable, makes it with debootstrap (root, `apt-get install debootstrap`).
# The smoke tests train a tiny model on the host (.venv, via scripts/setup.sh), evaluate it on
# the host and in the container (same counts expected), train 2 epochs with 2 Horovod ranks in
# one container, and check that a missing or wrongly mounted data folder fails clearly.
# Settings (environment): IMAGE (feature-denoising:cpu), BASE, DEBIAN_MIRROR, WORK (a new
# folder under /tmp: the data, models, logs and results of this run).
set -euo pipefail
cd "$(dirname "$0")/.."
IMAGE=${IMAGE:-feature-denoising:cpu}
BASE=${BASE:-debian:bookworm-slim}
DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
PYTHON=.venv/bin/python
# The tests' tiny model (tests/cli.py ARCH) with the digits' 10 classes, 16x16 inputs.
ARCH=(--arch ResNetDenoise --blocks 1,1 --widths 4,8 --stem small --stem-width 8 --num-classes 10 --image-size 16)
TRAIN=(--batch 32 --workers 0 --attack-iter 1 --eval-schedule 0:1 --eval-final 0 "${ARCH[@]}")
EVAL=(--eval --attack-iter 0,2 --attack-seed 0 --batch 64 --workers 0 "${ARCH[@]}")

say() { echo "[docker] $*"; }
die() { echo "[docker] FAILED: $*" >&2; exit 1; }
trap 'status=$?; echo "[docker] FAILED (exit $status) at line $LINENO: $BASH_COMMAND" >&2' ERR

skip_build=0
for arg in "$@"; do
    case "$arg" in
        --skip-build) skip_build=1 ;;
        -h|--help) sed -n '2,11p' "$0"; exit 0 ;;
        *) die "unknown option '$arg' (see: bash scripts/docker.sh --help)" ;;
    esac
done

# (a) an engine that answers
say "checking that a Docker engine answers (docker info)"
command -v docker >/dev/null || die "no 'docker' command: install one (Debian/Ubuntu: apt-get install -y docker.io)"
if ! timeout 20 docker info >/dev/null 2>&1; then
    die "no Docker engine answers at ${DOCKER_HOST:-unix:///var/run/docker.sock}: start one, e.g.
    systemctl start docker
or, without systemd (as root; vfs needs no kernel overlay support):
    dockerd --storage-driver=vfs --iptables=false --bridge=none > /tmp/dockerd.log 2>&1 &"
fi
say "engine: Docker $(docker version --format '{{.Server.Version}}' 2>/dev/null)"

WORK=${WORK:-$(mktemp -d /tmp/fd-docker.XXXXXX)}
mkdir -p "$WORK"
WORK=$(cd "$WORK" && pwd)
say "work folder: $WORK"
rootfs=""
cleanup() { if [ -n "$rootfs" ] && [ -d "$rootfs" ]; then rm -rf --one-file-system "$rootfs"; fi; }
trap cleanup EXIT

# (b) the base image: present, pulled, or made with debootstrap
make_base() {
    say "$BASE is not present and cannot be pulled: making it with debootstrap (Debian bookworm, minbase)"
    [ "$(id -u)" = 0 ] || die "debootstrap needs root: run as root, or load $BASE another way"
    command -v debootstrap >/dev/null || die "no 'debootstrap': apt-get install -y debootstrap"
    rootfs=$(mktemp -d /var/tmp/fd-bookworm.XXXXXX)
    chmod 0755 "$rootfs"        # it becomes the image's /: mktemp's 0700 would lock out non-root users
    say "debootstrap --variant=minbase bookworm $rootfs $DEBIAN_MIRROR (log: $WORK/debootstrap.log)"
    debootstrap --variant=minbase bookworm "$rootfs" "$DEBIAN_MIRROR" > "$WORK/debootstrap.log" 2>&1 \
        || { tail -n 20 "$WORK/debootstrap.log" >&2; die "debootstrap failed (log: $WORK/debootstrap.log)"; }
    cat > "$rootfs/etc/apt/sources.list" <<EOF
deb $DEBIAN_MIRROR bookworm main
deb $DEBIAN_MIRROR bookworm-updates main
deb ${DEBIAN_MIRROR%/debian}/debian-security bookworm-security main
EOF
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
    say "docker import of the bookworm tree as $BASE"
    tar -C "$rootfs" -c . | docker import \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'ENV LANG=C.UTF-8' --change 'CMD ["bash"]' - "$BASE" >/dev/null
    rm -rf --one-file-system "$rootfs"
    rootfs=""
}

host_extra_ca_certs() {    # the PEM certificates of the host's CA bundle that no ca-certificates package file has
    [ -f /etc/ssl/certs/ca-certificates.crt ] && [ -d /usr/share/ca-certificates ] && command -v python3 >/dev/null \
        || return 0
    python3 - <<'EOF'
import glob, re
pem = re.compile(r"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----", re.S)
def certs(path):
    with open(path, errors="replace") as f:
        return pem.findall(f.read())
known = {"".join(c.split()) for path in glob.glob("/usr/share/ca-certificates/**/*.crt", recursive=True)
         for c in certs(path)}
extra = [c for c in certs("/etc/ssl/certs/ca-certificates.crt") if "".join(c.split()) not in known]
if len(extra) <= 20:        # more would be an unusual bundle, not a proxy's additions
    print("\n".join(extra))
EOF
}

if [ "$skip_build" = 1 ]; then
    docker image inspect "$IMAGE" >/dev/null 2>&1 || die "--skip-build, but there is no image $IMAGE: build it first"
    say "--skip-build: using the existing $IMAGE"
else
    if docker image inspect "$BASE" >/dev/null 2>&1; then
        say "base image $BASE is present"
    else
        say "base image $BASE: trying docker pull"
        if timeout 300 docker pull "$BASE" > "$WORK/pull.log" 2>&1; then
            say "pulled $BASE"
        else
            say "cannot pull $BASE: $(tail -n 1 "$WORK/pull.log")"
            make_base
        fi
    fi

    # (c) the CPU image
    extra_ca=$(host_extra_ca_certs)
    if [ -n "$extra_ca" ]; then
        say "this host trusts $(grep -c 'BEGIN CERTIFICATE' <<< "$extra_ca") CA certificate(s) besides its" \
            "ca-certificates package (a TLS-intercepting proxy's?): passed to the builder stage as EXTRA_CA_CERTS"
    fi
    say "building $IMAGE (VARIANT=cpu, base $BASE; full log: $WORK/build.log)"
    start=$(date +%s)
    if ! docker build --network host --build-arg BUILD_BASE="$BASE" --build-arg BASE="$BASE" \
            --build-arg VARIANT=cpu --build-arg EXTRA_CA_CERTS="$extra_ca" -t "$IMAGE" . 2>&1 \
            | tee "$WORK/build.log" \
            | { grep --line-buffered -E '^Step [0-9]+/[0-9]+ :|^#[0-9]+ \[' || true; }; then
        tail -n 30 "$WORK/build.log" >&2
        die "docker build failed (log: $WORK/build.log)"
    fi
    seconds=$(( $(date +%s) - start ))
    say "build time: $((seconds / 60)) min $((seconds % 60)) s"
fi
bytes=$(docker image inspect --format '{{.Size}}' "$IMAGE")
say "image size: $((bytes / 1000000)) MB ($bytes bytes); docker images:"
docker images "$IMAGE"
user=$(docker image inspect --format '{{.Config.User}}' "$IMAGE")
case "$user" in ""|root|0|0:*) die "$IMAGE runs as root (USER '$user')" ;; esac
say "the image runs as user '$user'"

# (d) smoke tests
say "host environment: bash scripts/setup.sh"
bash scripts/setup.sh

mkdir -p "$WORK/results" "$WORK/hvd-run"
chmod 0777 "$WORK/results" "$WORK/hvd-run"     # written by the container's user (uid 1000)
say "tiny data set: $PYTHON -m tools.digits --out $WORK/data --size 16"
"$PYTHON" -m tools.digits --out "$WORK/data" --size 16

say "tiny training on the host, 1 epoch (log: $WORK/host-train.log)"
echo "  \$ $PYTHON main.py --train --data $WORK/data --logdir $WORK/model --epochs 1 ${TRAIN[*]}"
if ! "$PYTHON" main.py --train --data "$WORK/data" --logdir "$WORK/model" --epochs 1 "${TRAIN[@]}" \
        > "$WORK/host-train.log" 2>&1; then
    tail -n 20 "$WORK/host-train.log" >&2
    die "host training failed (log: $WORK/host-train.log)"
fi

say "evaluation on the host (clean and PGD-2, --attack-seed 0)"
echo "  \$ $PYTHON main.py --data $WORK/data --load $WORK/model --result-file $WORK/results/host.json ${EVAL[*]}"
"$PYTHON" main.py --data "$WORK/data" --load "$WORK/model" --result-file "$WORK/results/host.json" "${EVAL[@]}" \
    > "$WORK/host-eval.log" 2>&1 || { tail -n 20 "$WORK/host-eval.log" >&2; die "host evaluation failed"; }

say "the same evaluation in the container (data and model mounted read-only, no network)"
run=(docker run --rm --network none -v "$WORK/data:/data:ro" -v "$WORK/model:/model:ro" -v "$WORK/results:/results")
echo "  \$ ${run[*]} $IMAGE --data /data --load /model --result-file /results/container.json ${EVAL[*]}"
"${run[@]}" "$IMAGE" --data /data --load /model --result-file /results/container.json "${EVAL[@]}" \
    > "$WORK/container-eval.log" 2>&1 \
    || { tail -n 20 "$WORK/container-eval.log" >&2; die "evaluation in the container failed"; }

owner=$(stat -c %u "$WORK/results/container.json")
[ "$owner" != 0 ] || die "the container wrote its result file as root"
say "comparing the counts (host vs container; the container's file is owned by uid $owner)"
"$PYTHON" - "$WORK/results/host.json" "$WORK/results/container.json" <<'EOF'
import json, sys
def counts(path):
    with open(path) as f:
        record = json.load(f)
    return [{k: p[k] for k in ("attack", "images", "wrong_top1", "wrong_top5", "successes")}
            for p in record.get("points", [record])]
host, container = counts(sys.argv[1]), counts(sys.argv[2])
for h, c in zip(host, container):
    print("  {:>10}  host {}  container {}".format(h["attack"], {k: v for k, v in h.items() if k != "attack"},
                                                   {k: v for k, v in c.items() if k != "attack"}))
if host != container:
    sys.exit("[docker] FAILED: the container's counts differ from the host's")
print("  same counts")
EOF

say "2 Horovod ranks (Gloo) in one container, 2 epochs (log: $WORK/horovod.log)"
hvd=(docker run --rm --network host -v "$WORK/data:/data:ro" -v "$WORK/hvd-run:/workspace/run" --entrypoint horovodrun
     "$IMAGE" -np 2 -H localhost:2 --gloo python /opt/feature-denoising/main.py --train --data /data
     --logdir /workspace/run/train --epochs 2 "${TRAIN[@]}")
echo "  \$ ${hvd[*]}"
code=0
timeout 1800 "${hvd[@]}" > "$WORK/horovod.log" 2>&1 || code=$?
grep -E "Epoch [0-9]+ \(global_step|Training has finished" "$WORK/horovod.log" | tail -n 6 | sed 's/^/  /' || true
if [ "$code" != 0 ]; then
    tail -n 30 "$WORK/horovod.log" >&2
    die "horovodrun in the container exited $code (log: $WORK/horovod.log)"
fi
"$PYTHON" - "$WORK/hvd-run/train/stats.json" <<'EOF'
import json, sys
with open(sys.argv[1]) as f:
    records = json.load(f)
epochs = [r.get("epoch_num") for r in records]
print("  horovodrun exited 0; stats.json epochs: {}".format(epochs))
if epochs[-1:] != [2]:
    sys.exit("[docker] FAILED: expected 2 epochs in stats.json")
EOF

expect_error() {    # NAME EXPECTED-TEXT DOCKER-RUN-ARGS...: a non-zero exit and EXPECTED-TEXT on stderr
    local name=$1 expected=$2 code=0
    shift 2
    echo "  \$ docker run $*"
    docker run "$@" > "$WORK/$name.out" 2> "$WORK/$name.err" || code=$?
    [ "$code" != 0 ] || die "$name: the container exited 0"
    grep -q -- "$expected" "$WORK/$name.err" \
        || { cat "$WORK/$name.err" >&2; die "$name: '$expected' not on stderr"; }
    say "$name: exit $code, stderr: $(grep -- "$expected" "$WORK/$name.err")"
}
say "no data folder in the container (nothing mounted on /data)"
expect_error missing-data "error: data directory not found: /data" --rm --network none \
    -v "$WORK/model:/model:ro" "$IMAGE" --data /data --load /model "${EVAL[@]}"
say "a bad mount (a mistyped host folder: docker creates it empty)"
expect_error bad-mount "error: missing folder: /data/val" --rm --network none \
    -v "$WORK/no-such-imagenet:/data:ro" -v "$WORK/model:/model:ro" "$IMAGE" --data /data --load /model "${EVAL[@]}"

say "all smoke tests passed ($IMAGE; outputs in $WORK)"
