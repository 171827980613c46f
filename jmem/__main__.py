import sys

from jmem.cli import main

sys.exit(main())
