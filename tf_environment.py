"""What TensorFlow reads from the environment when it loads, set once for every entry point (main.py, the tools,
the benchmarks, the tests), each of which imports this module before TensorFlow. A value already in the environment
wins, so `TF_ENABLE_ONEDNN_OPTS=0 python main.py ...` still turns oneDNN off.

- TF_CPP_MIN_LOG_LEVEL=2: TensorFlow's C++ info and warning lines (CUDA probing, CPU features) left out of the logs.
- TF_ENABLE_ONEDNN_OPTS=1: TensorFlow 2.15 turns its oneDNN CPU kernels on by itself only on CPUs with AVX512_VNNI,
  AVX512_BF16 or AMX; on an AVX2 CPU they are off unless asked for, and its own convolution gradients are slow: the
  demo's PGD-3 training step (batch 64, 16x16) took 1.08 s without them and 0.51 s with them on an AVX2 EPYC (2
  cores). GPUs are not affected. oneDNN sums in another order: results agree with the other kernels to float32
  rounding, not bit for bit."""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
