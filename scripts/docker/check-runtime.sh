#!/usr/bin/env sh
# Checks that BINARY needs no shared library the runtime image (debian-slim) lacks: only the C
# library, libm, libgcc_s, the loader and OpenSSL 3 (libssl3, librdkafka's TLS; the image
# installs it). Run in the Dockerfile's runtime stage and by CI.
set -eu
bin=${1:?usage: check-runtime.sh BINARY}
"$bin" --version >/dev/null
if ! command -v ldd >/dev/null 2>&1; then
  echo "check-runtime: no ldd here; $bin runs"
  exit 0
fi
extra=$(ldd "$bin" | awk '{print $1}' | grep -Ev '^(linux-vdso\.so|libc\.so|libm\.so|libgcc_s\.so|libssl\.so\.3|libcrypto\.so\.3|libpthread\.so|libdl\.so|librt\.so|/lib64/ld-linux|ld-linux)' || true)
if [ -n "$extra" ]; then
  echo "check-runtime: $bin needs libraries the runtime image does not have: $extra" >&2
  exit 1
fi
echo "check-runtime: $bin needs only libc, libm, libgcc_s and OpenSSL 3"
