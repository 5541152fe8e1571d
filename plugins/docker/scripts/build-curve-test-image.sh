#!/usr/bin/env bash
# Build the kernel_hub test kernel image whose kernel speaks CurveZMQ, with no registry: the
# bookworm test image (build-test-image.sh, built first if missing) plus ipykernel >= 7.4.
# uv on the host fetches ipykernel and its dependencies as wheels (PyPI through uv's client, at
# the versions of uv.lock: what the suite runs on the host) for the image's Python 3.11 and
# installs them into a directory that becomes the image's /usr/local/lib/python3.11/dist-packages,
# which Debian's python3 puts ahead of /usr/lib/python3/dist-packages (where the base image's
# ipykernel 6.17 stays, unused). Nothing in the container needs a network. pyzmq's wheel bundles
# libzmq with CurveZMQ. The org.kernel-hub.kernel label declares it as a kernelspec would:
# "metadata": {"supported_encryption": ["curve"]}.
# Cached by tag: does nothing when the image already exists. Usage: build-curve-test-image.sh [TAG]
set -euo pipefail
cd "$(dirname "$0")/../../.."
TAG=${1:-${KERNEL_HUB_DOCKER_CURVE_IMAGE:-kernel-hub-test/ipykernel:bookworm-curve}}
BASE=${KERNEL_HUB_DOCKER_TEST_IMAGE:-kernel-hub-test/ipykernel:bookworm}
if docker image inspect "$TAG" >/dev/null 2>&1; then
    echo "image $TAG exists; not rebuilding"
    exit 0
fi
plugins/docker/scripts/build-test-image.sh "$BASE"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# The lock's versions as constraints: only ipykernel's own dependencies are installed.
uv export --quiet --frozen --no-hashes --no-emit-workspace --no-dev --package kernel-hub-ipykernel \
    -o "$tmp/constraints.txt"
uv pip install --quiet --target "$tmp/site" --python-version 3.11 \
    --python-platform "$(uname -m)-manylinux_2_28" --only-binary :all: \
    --constraint "$tmp/constraints.txt" 'ipykernel>=7.4'
rm -rf "$tmp/site/bin"  # console scripts: the kernel runs as 'python3 -m ipykernel_launcher'
LABEL='{"name": "bookworm-curve", "display_name": "Python 3.11, ipykernel 7 (Debian bookworm, Docker)", "language": "python", "argv": ["python3", "-m", "ipykernel_launcher", "-f", "{connection_file}"], "metadata": {"supported_encryption": ["curve"]}}'
cat >"$tmp/Dockerfile" <<EOF
FROM $BASE
COPY site /usr/local/lib/python3.11/dist-packages
LABEL org.kernel-hub.kernel='$LABEL'
EOF
docker build --quiet --tag "$TAG" "$tmp" >/dev/null
echo "built $TAG"
