#!/bin/bash
# Training on all GPUs of one machine.
#
#   launch/single_host_multi_gpu.sh configs/cityscapes_wrn38.py runs/cityscapes_wrn38 \
#       --config.data.root=/data/cityscapes
#
# One process drives every visible GPU (the default and the fastest way on one host): the mesh
# {"data": -1} spans them, the global batch (config.train.batch_size) is split over them and
# BatchNorm statistics are global (syncbn=True). Choose GPUs with CUDA_VISIBLE_DEVICES.
# For WideResNet38 at large batch, shard the biggest parameters too, e.g. in the config file:
#   c.mesh.shape = {"data": -1, "fsdp": 8}
#
# Alternatively, one process per GPU group (closer to a multi-host job, e.g. for debugging):
#   python launch/local_multiprocess.py --num_processes 2 --gpus_per_process 4 -- \
#       --config CONFIG --workdir WORKDIR
set -euo pipefail
CONFIG=${1:?usage: launch/single_host_multi_gpu.sh CONFIG WORKDIR [--config.x=y ...]}
WORKDIR=${2:?usage: launch/single_host_multi_gpu.sh CONFIG WORKDIR [--config.x=y ...]}
shift 2
cd "$(dirname "$0")/.."

export XLA_PYTHON_CLIENT_MEM_FRACTION=${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.92}
export XLA_FLAGS="${XLA_FLAGS:-} --xla_gpu_enable_latency_hiding_scheduler=true"

# exec: SIGTERM (e.g. from a scheduler) reaches python, which checkpoints before exiting;
# run the same command again to resume.
exec "${PYTHON:-python}" -m jaxseg.main --config "${CONFIG}" --workdir "${WORKDIR}" "$@"
