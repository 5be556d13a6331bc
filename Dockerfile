# GPU image for clusters: TensorFlow 2.15 with CUDA 12.2, Horovod 0.28.1 built with NCCL and MPI.
#   docker build -t feature-denoising .
#   docker run --gpus all -v /data/imagenet:/data feature-denoising --eval --data /data \
#       --load /data/R152-Denoise.npz --arch ResNetDenoise -d 152 --attack-iter 10
# Not built in this project's CI (its machines have no Docker engine); keep it minimal.
FROM nvidia/cuda:12.2.2-cudnn8-devel-ubuntu22.04

ENV DEBIAN_FRONTEND=noninteractive PIP_NO_CACHE_DIR=1 PYTHONUNBUFFERED=1
RUN apt-get update && apt-get install -y --no-install-recommends \
        python3 python3-dev python3-pip g++ cmake git openmpi-bin libopenmpi-dev \
        libnccl2 libnccl-dev libgl1 libglib2.0-0 \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/feature-denoising
COPY requirements.txt .
RUN python3 -m pip install --upgrade "pip>=24" wheel "setuptools<70" packaging \
    && python3 -m pip install -r requirements.txt

# NCCL for GPU collectives, MPI to launch across nodes (horovodrun or mpirun/srun).
RUN HOROVOD_GPU_OPERATIONS=NCCL HOROVOD_WITH_TENSORFLOW=1 HOROVOD_WITH_MPI=1 \
    HOROVOD_WITHOUT_PYTORCH=1 HOROVOD_WITHOUT_MXNET=1 \
    python3 -m pip install --no-build-isolation "horovod[tensorflow]==0.28.1" \
    && horovodrun --check-build

COPY . .
ENTRYPOINT ["python3", "main.py"]
