# One Dockerfile, two images. Both: Python 3.11 venv in /opt/venv (requirements.txt pins, Horovod
# 0.28.1 built from source against that TensorFlow, as scripts/setup.sh does), the project in
# /opt/feature-denoising, user `fd` (uid 1000), main.py as the entry point, working folder /workspace.
#
#   GPU image, the default arguments (CUDA 12.2 + cuDNN 8, Ubuntu 22.04; Horovod with NCCL, MPI and Gloo):
#     docker build -t feature-denoising .
#     docker run --gpus all --ipc=host -v /data/imagenet:/data:ro feature-denoising --eval --data /data \
#         --load /data/R152-Denoise.npz --arch ResNetDenoise -d 152 --attack-iter 10
#   CPU image (Debian bookworm; Horovod with Gloo only): what scripts/docker.sh builds and smoke-tests
#     docker build --network host --build-arg BUILD_BASE=debian:bookworm-slim \
#         --build-arg BASE=debian:bookworm-slim --build-arg VARIANT=cpu -t feature-denoising:cpu .
#
# What differs between the two images, and nothing else does:
#   1. the base images: the ARGs BUILD_BASE (builder stage) and BASE (final stage) below;
#   2. the builder's apt layer: the GPU image adds libopenmpi-dev, openmpi-bin, libnccl-dev;
#   3. the Horovod layer: GPU builds with HOROVOD_GPU_OPERATIONS=NCCL HOROVOD_WITH_MPI=1 (and Gloo),
#      CPU with HOROVOD_WITHOUT_MPI=1 (Gloo only), both with HOROVOD_WITH_TENSORFLOW=1;
#   4. the final stage's apt layer: the GPU image adds openmpi-bin (mpirun, libopenmpi3).
# Items 2-4 are the `case "$VARIANT"` branches of otherwise shared RUN steps. Every other
# step is the same text for both. Works with the classic builder and with BuildKit.
# (EXTRA_CA_CERTS, for builds behind a TLS-intercepting proxy, is the same for both.)

# GPU defaults. The builder needs nvcc and the CUDA headers (devel); the final stage only the
# runtime libraries (cuDNN 8, cuBLAS, ...), so no compiler ends up in the image. NCCL is
# linked statically into Horovod (its default), so the runtime needs no NCCL package.
ARG BUILD_BASE=nvidia/cuda:12.2.2-cudnn8-devel-ubuntu22.04
ARG BASE=nvidia/cuda:12.2.2-cudnn8-runtime-ubuntu22.04

########## builder: compilers, the venv, Horovod ##########
FROM ${BUILD_BASE} AS builder
# gpu | cpu: selects the apt packages and Horovod's build flags (items 2 and 3 above).
ARG VARIANT=gpu
# The interpreter: python3.11 on both bases (Ubuntu 22.04 universe, Debian 12 main).
ARG PYTHON=python3.11
ARG HOROVOD_VERSION=0.28.1
# Only for builds behind a TLS-intercepting proxy (both variants): PEM text of the CA
# certificates pip must trust besides the usual ones; scripts/docker.sh passes those its host
# adds to its ca-certificates. Installed in the builder stage only, never in the final image.
ARG EXTRA_CA_CERTS=""
ENV DEBIAN_FRONTEND=noninteractive PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 VIRTUAL_ENV=/opt/venv \
    PIP_CERT=/etc/ssl/certs/ca-certificates.crt

# Item 2: the builder's system packages.
RUN set -eux; \
    case "$VARIANT" in \
        gpu) extra="libopenmpi-dev openmpi-bin libnccl-dev" ;; \
        cpu) extra="" ;; \
        *) echo "VARIANT must be gpu or cpu, not '$VARIANT'" >&2; exit 1 ;; \
    esac; \
    apt-get update; \
    apt-get install -y --no-install-recommends ca-certificates g++ make \
        "$PYTHON" "$PYTHON-venv" "$PYTHON-dev" $extra; \
    rm -rf /var/lib/apt/lists/* /var/cache/apt/archives/*.deb; \
    if [ -n "$EXTRA_CA_CERTS" ]; then \
        printf '%s\n' "$EXTRA_CA_CERTS" > /usr/local/share/ca-certificates/build-extra.crt; \
        update-ca-certificates; \
    fi

# The pinned requirements (same for both images).
COPY requirements.txt /tmp/requirements.txt
RUN set -eux; \
    "$PYTHON" -m venv /opt/venv; \
    /opt/venv/bin/pip install --upgrade "pip>=24" wheel "setuptools<70" packaging; \
    /opt/venv/bin/pip install -r /tmp/requirements.txt

# Item 3: Horovod built from source against the TensorFlow above (flags as in scripts/setup.sh);
# cmake comes from PyPI for the build only and is removed again; below 4, which refuses the
# cmake_minimum_required(< 3.5) of Horovod 0.28.1's bundled Gloo.
RUN set -eux; \
    case "$VARIANT" in \
        gpu) export HOROVOD_GPU_OPERATIONS=NCCL HOROVOD_WITH_MPI=1 ;; \
        cpu) export HOROVOD_WITHOUT_MPI=1 ;; \
    esac; \
    /opt/venv/bin/pip install "cmake>=3.13,<4"; \
    HOROVOD_WITH_TENSORFLOW=1 HOROVOD_WITH_GLOO=1 HOROVOD_WITHOUT_PYTORCH=1 HOROVOD_WITHOUT_MXNET=1 \
    MAKEFLAGS="-j$(nproc)" PATH="/opt/venv/bin:$PATH" \
        /opt/venv/bin/pip install --no-build-isolation "horovod[tensorflow]==$HOROVOD_VERSION"; \
    /opt/venv/bin/pip uninstall -y cmake; \
    /opt/venv/bin/horovodrun --check-build

# The project, byte-compiled here (the non-root user cannot write .pyc next to it at run time).
COPY . /opt/feature-denoising
RUN /opt/venv/bin/python -m compileall -q /opt/feature-denoising

########## final: runtime libraries, the venv, the project ##########
FROM ${BASE}
ARG VARIANT=gpu
ARG PYTHON=python3.11
ENV DEBIAN_FRONTEND=noninteractive PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 \
    VIRTUAL_ENV=/opt/venv PATH=/opt/venv/bin:$PATH PYTHONPATH=/opt/feature-denoising

# Item 4: runtime packages (no compiler, no -dev package), and the non-root user.
# openssh-client: horovodrun / mpirun start remote ranks over ssh.
RUN set -eux; \
    case "$VARIANT" in \
        gpu) extra="openmpi-bin" ;; \
        cpu) extra="" ;; \
        *) echo "VARIANT must be gpu or cpu, not '$VARIANT'" >&2; exit 1 ;; \
    esac; \
    apt-get update; \
    apt-get install -y --no-install-recommends ca-certificates openssh-client "$PYTHON" $extra; \
    rm -rf /var/lib/apt/lists/* /var/cache/apt/archives/*.deb /var/log/apt /var/log/dpkg.log; \
    useradd --create-home --uid 1000 --shell /bin/bash fd; \
    install -d -m 1777 /workspace

# Runs as `fd`; /workspace is writable by any uid (docker run --user "$(id -u):$(id -g)" works too),
# relative paths such as the default train_log/ land there: mount a host folder on it to keep them.
# (Settings before the two big copies: each step after them would copy the whole tree again
# with the vfs storage driver.)
USER fd
WORKDIR /workspace
ENTRYPOINT ["python", "/opt/feature-denoising/main.py"]
CMD ["--help"]
COPY --from=builder /opt/venv /opt/venv
COPY --from=builder /opt/feature-denoising /opt/feature-denoising
