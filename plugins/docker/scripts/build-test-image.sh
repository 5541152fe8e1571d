#!/usr/bin/env bash
# Build the kernel_hub test kernel image with no registry: a minimal Debian bookworm with
# python3-ipykernel (via mmdebstrap from the Debian mirrors), imported with the CMD and the
# org.kernel-hub.kernel label, so label discovery offers it as docker/<name>.
# Cached by tag: does nothing when the image already exists. Usage: build-test-image.sh [TAG]
set -euo pipefail
TAG=${1:-${KERNEL_HUB_DOCKER_TEST_IMAGE:-kernel-hub-test/ipykernel:bookworm}}
if docker image inspect "$TAG" >/dev/null 2>&1; then
    echo "image $TAG exists; not rebuilding"
    exit 0
fi
command -v mmdebstrap >/dev/null || { echo "mmdebstrap is missing: apt-get install -y mmdebstrap" >&2; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mmdebstrap --quiet --variant=minbase --include=python3-ipykernel bookworm "$tmp/img.tar"
LABEL='{"name": "bookworm-py", "display_name": "Python 3.11 (Debian bookworm, Docker)", "language": "python", "argv": ["python3", "-m", "ipykernel_launcher", "-f", "{connection_file}"]}'
docker import \
    -c 'CMD ["python3", "-m", "ipykernel_launcher"]' \
    -c 'WORKDIR /root' \
    -c 'ENV PYTHONUNBUFFERED=1' \
    -c "LABEL org.kernel-hub.kernel='$LABEL'" \
    "$tmp/img.tar" "$TAG"
echo "built $TAG"
