#!/usr/bin/env bash
# Make Fashion-MNIST's IDX files available where possible (Debian's dataset-fashion-mnist,
# 31 MB, into /usr/share/datasets/fashion-mnist). Never fails: without root or apt it prints
# how to get the files; tests that need them are then skipped (failed under CI=true).
if [ -n "${JMEM_FASHION_MNIST_DIR:-}" ] || [ -e /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]; then
  exit 0
fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "fashion_mnist.sh: installing dataset-fashion-mnist (apt-get, 31 MB)" >&2
  if (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist) >/dev/null 2>&1; then
    exit 0
  fi
  echo "fashion_mnist.sh: apt-get install dataset-fashion-mnist failed" >&2
fi
echo "fashion_mnist.sh: Fashion-MNIST files not found; tests that need them will be skipped. Get them with" \
     "'sudo apt-get install dataset-fashion-mnist', or put the four *-ubyte.gz files from" \
     "https://github.com/zalandoresearch/fashion-mnist (data/fashion/) in DIR and export JMEM_FASHION_MNIST_DIR=DIR" >&2
exit 0
