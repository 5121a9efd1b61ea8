#!/usr/bin/env bash
# tools.sh — what `make test` and `make bench` need, checked in a second
# before any of the long steps start, so that a missing tool fails (or is
# installed, or its step is skipped) at once rather than after minutes.
#
#   scripts/tools.sh test    go >= 1.26, a C compiler (-race needs cgo), git,
#                            qemu-aarch64-static (the arm64 run), minio
#                            (contrib/s3's tests against a real server)
#   scripts/tools.sh bench   go >= 1.26 (bench.sh installs benchstat itself)
#   scripts/tools.sh qemu    exit 0 if the arm64 run can go ahead; otherwise
#                            print why and exit 1 outside CI (skip), 2 under
#                            CI=true (required)
#
# Outside CI a missing Debian package (gcc, qemu-user-static) is installed
# when this runs as root with apt-get; otherwise the notice says how to get
# it. Under CI=true every tool is required: .ci/run installs them first.
set -euo pipefail

GO=${GO:-go}
QEMU=${QEMU:-qemu-aarch64-static}
MIN_MINOR=26

in_ci() { [ "${CI:-}" = true ] || [ "${CI:-}" = 1 ]; }

can_apt() { [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; }

apt_install() {
	echo "tools: installing $* (apt-get, as root) ..." >&2
	apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

check_go() {
	if ! command -v "$GO" >/dev/null 2>&1; then
		echo "tools: no '$GO' on PATH: install Go 1.$MIN_MINOR or newer (https://go.dev/dl/)" >&2
		return 1
	fi
	local v minor
	v=$(GOTOOLCHAIN=local "$GO" env GOVERSION)
	minor=$(sed -E 's/^go1\.([0-9]+).*/\1/' <<<"$v")
	if ! [[ "$minor" =~ ^[0-9]+$ ]] || [ "$minor" -lt "$MIN_MINOR" ]; then
		echo "tools: $v is too old: this project needs Go 1.$MIN_MINOR or newer" >&2
		return 1
	fi
	echo "tools: $v"
}

# -race needs cgo, and cgo a C compiler: without one the go command turns
# cgo off and `go test -race` fails with "-race requires cgo".
check_cc() {
	local cc
	cc=$("$GO" env CC)
	if command -v "$cc" >/dev/null 2>&1; then
		echo "tools: C compiler $cc (for -race)"
		return 0
	fi
	if ! in_ci && can_apt && apt_install gcc libc6-dev && command -v "$cc" >/dev/null 2>&1; then
		echo "tools: C compiler $cc installed (for -race)"
		return 0
	fi
	echo "tools: no C compiler '$cc': -race needs cgo (Debian: apt-get install gcc)" >&2
	return 1
}

check_git() {
	if ! command -v git >/dev/null 2>&1; then
		echo "tools: no git: the generated-files check and the module proxy read the repository (apt-get install git)" >&2
		return 1
	fi
}

# check_qemu [install] prints a notice and returns 1 (skip) or 2 (required)
# when qemu-aarch64-static is missing (and, with "install", cannot be
# installed).
check_qemu() {
	if command -v "$QEMU" >/dev/null 2>&1; then
		echo "tools: $QEMU (the arm64 run)"
		return 0
	fi
	if in_ci; then
		echo "tools: CI=true and no $QEMU: the arm64 run is required in CI (apt-get install qemu-user-static; .ci/run does it)" >&2
		return 2
	fi
	if [ "${1:-}" = install ] && can_apt && apt_install qemu-user-static && command -v "$QEMU" >/dev/null 2>&1; then
		echo "tools: $QEMU installed (the arm64 run)"
		return 0
	fi
	echo "tools: NOTICE: no $QEMU, so the arm64 run (make arm64) will be SKIPPED." >&2
	echo "tools:   To run it: sudo apt-get install qemu-user-static (Debian/Ubuntu), or set QEMU=/path/to/qemu-aarch64." >&2
	return 1
}

# The version .ci/run installs; contrib/s3/minio_test.go names the same.
MINIO_MODULE=github.com/minio/minio@v0.0.0-20260212201848-7aac2a2c5b7c

# check_minio: contrib/s3's tests look for minio on PATH or in GOPATH/bin
# (or $VINEQUEUE_MINIO). It is not installed here: it builds from the Go
# module proxy in about 4 minutes on 2 cores.
check_minio() {
	if [ -n "${VINEQUEUE_MINIO:-}" ] || command -v minio >/dev/null 2>&1 || [ -x "$("$GO" env GOPATH)/bin/minio" ]; then
		echo "tools: minio (contrib/s3 against a real MinIO)"
		return 0
	fi
	if in_ci; then
		echo "tools: CI=true and no minio: contrib/s3's tests need it (go install $MINIO_MODULE; .ci/run does it)" >&2
		return 1
	fi
	echo "tools: NOTICE: no minio, so contrib/s3's tests against a real MinIO will be SKIPPED." >&2
	echo "tools:   To run them: go install $MINIO_MODULE (about 4 minutes, once)" >&2
}

case "${1:-}" in
test)
	check_go
	check_git
	check_cc
	check_minio
	rc=0
	check_qemu install || rc=$?
	# A missing qemu outside CI is a skip, not a failure.
	[ "$rc" = 2 ] && exit 1
	exit 0
	;;
bench) check_go ;;
qemu)
	rc=0
	check_qemu >/dev/null || rc=$?
	exit "$rc"
	;;
*)
	echo "usage: $0 test|bench|qemu" >&2
	exit 2
	;;
esac
