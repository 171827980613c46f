"""``python -m jmem.bench``: the benchmark with its own host-device set-up."""

import sys

# Before JAX is imported: XLA:CPU fixes its device count at start-up. Same rule as the
# `jmem` command: --devices N, else $JMEM_CPU_DEVICES, else one host device per core.
from jmem.engine.host_devices import configure_host_devices

configure_host_devices(sys.argv[1:])

from jmem.bench.command import main  # noqa: E402

sys.exit(main())
