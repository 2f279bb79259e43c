#!/usr/bin/env bash
# The Dockerfile's build step: compiles the `tidings` binary and copies it to OUT_DIR.
# CARGO_PROFILE (default release) picks the profile; CI runs this with `dev` so the step is
# checked on every change without a Docker engine or a 28-minute release build.
set -euo pipefail
out=${1:?usage: build.sh OUT_DIR}
profile=${CARGO_PROFILE:-release}
cd "$(dirname "$0")/../.."
# TIDINGS_SQL=0 builds the job-only binary: no `tidings sql`/`report`/console, no DataFusion,
# about half the release build time (docs/build-cost.md).
features=()
[ "${TIDINGS_SQL:-1}" = 0 ] && features=(--no-default-features)
cargo build --locked --profile "$profile" -p tidings-dataflows --bin tidings "${features[@]}"
case "$profile" in
  dev) dir=debug ;;
  *) dir=$profile ;;
esac
mkdir -p "$out"
cp "${CARGO_TARGET_DIR:-target}/$dir/tidings" "$out/tidings"
"$out/tidings" --version
