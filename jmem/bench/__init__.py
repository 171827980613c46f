"""``jmem bench``: the throughput benchmark of mass subset training.

Files: ``workloads`` (models, shapes, FLOP counts), ``measure`` (timing, memory, peak),
``baselines`` (peers), ``harness`` (the sweep), ``tables`` (output), ``command`` (the CLI).
Importing this package imports no JAX, so ``python -m jmem.bench`` can set the host device
count first.

For each workload (the digits MLP 64-256-10, the MNIST-1D CNN, the CIFAR-shaped ResNet on
synthetic 32x32x3 data) and each number of models R, every batching strategy of
:func:`jmem.engine.trainer.train_models` and a set of peer baselines train R models on R random 70%
subsets with the same hyperparameters, and the benchmark reports:

* models/s and examples/s (steady state: the median of ``--repeats`` timed runs);
* compile time, separately (first call minus the steady-state median: it also contains the
  first run's one-off costs such as transfers, so it is an upper bound);
* peak host memory of a steady-state run: the process's resident-set high-water mark
  (``VmHWM``), reset before the run through ``/proc/self/clear_refs``, minus the resident set
  before it. On CPU this *is* the device memory (XLA's buffers live in the process). Where
  the reset is not allowed it falls back to ``ru_maxrss`` deltas, which only see growth past
  the earlier peak; the JSON names the method;
* device memory: ``peak_bytes_in_use`` from ``Device.memory_stats()`` when the backend has
  it (GPU/TPU; it is a running maximum over the whole process, so configurations are warmed
  up in increasing R); ``None`` on CPU;
* achieved FLOP/s, and its fraction of the device's peak measured in the same run with a
  large matmul of the same dtype. Model FLOPs are counted analytically: a dense or conv
  layer costs ``kernel.size * output positions`` multiply-adds per example, forward =
  2 x MACs, training = 3 x forward, over the examples each model actually trains on
  (epochs x subset size; the padding of the last batch is not counted, as in MFU).
  XLA's own cost analysis of the forward pass is recorded next to it as a cross-check.

Peer baselines (``--baselines``), each reported as a speed-up of jmem's ``auto`` over it:

* ``fz_loop``: Feldman & Zhang's official example style: one model at a time, a Python loop
  over a jitted step, batches sliced on the host;
* ``jax_scan``: one model at a time, the whole training one jitted ``lax.scan`` (a lean
  hand-written equivalent of jmem's ``sequential`` strategy);
* ``torch_loop``, ``torch_vmap``, ``torch_bmm``: PyTorch as a practitioner writes it: one
  model at a time; a ``torch.func`` ensemble (``stack_module_state`` + ``functional_call`` +
  ``vmap``) trained with one Adam over the stacked parameters; and, for the MLP, stacked
  weights with ``torch.baddbmm``. Optional (``pip install 'jmem[torch]'``): skipped with a
  message when torch is absent. ``torch_*`` use float32 on the CPU only.

One-at-a-time configurations have the same models/s at every R, so they train only the first
``--seq-models`` models of a wave. Hygiene: every configuration of one R is warmed up
(compiled) first, then the timed repeats run in a rotated order, and medians are reported;
timing on a shared CPU is noisy (BACKGROUND section 5), so compare rows of one run only.

Scaling (``--scaling``, default workload only): time vs R (from the main table) and vs N
(digits subsampled or replicated to N examples) for ``auto``.

Devices: like the ``jmem`` command, ``python -m jmem.bench`` makes one XLA host device per
core on a CPU (``--devices N`` or ``$JMEM_CPU_DEVICES`` choose another count). With several
devices, ``auto`` is what jmem does by default, the model axis sharded over all of them (the
``sharded`` row); ``vmap``, ``patches`` and ``sequential`` rows use one device.

Run: ``python -m jmem.bench [--model mlp,cnn,resnet] [--R 1,8,32,128] [--quick] [--out x.json]``;
results and how to read them: ``benchmarks/RESULTS.md``.
"""
