# VineQueue — the two commands a newcomer needs:
#   make test    what CI runs: vet, -race, -tags purego, arm64 under qemu, fuzz smoke, contrib, staticcheck
#   make bench   our benchmarks beside the peers', a table (see scripts/bench.sh)
SHELL := /bin/bash
GO ?= go
QEMU ?= qemu-aarch64-static
# Fuzz budgets are execution counts, not durations: on Go 1.26 a duration
# -fuzztime races the fuzz coordinator's own deadline and, on a loaded machine,
# fails with a bare "context deadline exceeded" and no crasher
# (go.dev/issue/75804, fixed in Go 1.27). A count has no deadline to race.
# FUZZEXECS is each target's budget (~3 s at the rates seen on 2 cores);
# FuzzOpen opens a real log twice per input (~1.5 ms), so it gets FUZZEXECS_OPEN.
FUZZEXECS ?= 100000
FUZZEXECS_OPEN ?= 5000
STATICCHECK := honnef.co/go/tools/cmd/staticcheck@v0.8.2
CONTRIB := $(wildcard contrib/*/go.mod)
EXAMPLES := $(wildcard examples/*/go.mod)

.PHONY: test tools tidy vet race purego arm64 fuzz contrib examples benchmarks-test modules-test staticcheck generated bench pgo bench-arm64 soak ci generate release

# tools comes first: it checks (or, outside CI and as root, installs) what the
# other steps need within seconds, instead of failing after minutes.
test: tools vet generated tidy race purego arm64 fuzz contrib examples benchmarks-test modules-test staticcheck

ci: test

tools:
	@GO=$(GO) QEMU=$(QEMU) scripts/tools.sh test

vet:
	$(GO) vet ./...
	$(GO) vet -tags purego ./...
	GOARCH=arm64 $(GO) vet ./...

race:
	$(GO) test -race -count=1 -timeout 15m ./...

purego:
	$(GO) test -tags purego -count=1 -timeout 15m ./...

# arm64 under qemu-user (install: apt-get install qemu-user-static). -short
# keeps the emulated run to the same coverage with fewer iterations. Without
# qemu the run is skipped with a notice, except under CI=true where it fails.
arm64:
	@rc=0; GO=$(GO) QEMU=$(QEMU) scripts/tools.sh qemu || rc=$$?; \
	case $$rc in \
	0) echo "GOARCH=arm64 $(GO) test -exec $(QEMU) -short -count=1 -timeout 20m ./..."; \
	   GOARCH=arm64 $(GO) test -exec $(QEMU) -short -count=1 -timeout 20m ./... ;; \
	1) echo "arm64: SKIPPED (no $(QEMU))" ;; \
	*) exit 1 ;; \
	esac

fuzz:
	@for pkg in $$($(GO) list ./...); do \
	  for f in $$($(GO) test -list '^Fuzz' $$pkg 2>/dev/null | grep '^Fuzz'); do \
	    n=$(FUZZEXECS); [ "$$f" = FuzzOpen ] && n=$(FUZZEXECS_OPEN); \
	    echo "fuzz $$pkg $$f ($${n} execs)"; \
	    $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $${n}x -fuzzminimizetime 1000x $$pkg || exit 1; \
	  done; \
	done

contrib:
	@for m in $(CONTRIB); do d=$$(dirname $$m); echo "test $$d"; \
	  (cd $$d && $(GO) vet ./... && $(GO) test -race -count=1 -timeout 10m ./...) || exit 1; done

# The examples' tests: examples/gateway boots on an in-process Kafka, takes
# events over HTTP and reads them back from the broker, and drains on SIGTERM.
examples:
	@for m in $(EXAMPLES); do d=$$(dirname $$m); echo "test $$d"; \
	  (cd $$d && $(GO) vet ./... && $(GO) test -race -count=1 -timeout 10m ./...) || exit 1; done

# Every module's go.mod and go.sum must be tidy. contrib and benchmarks
# require a released core (no replace; go.work joins the modules for
# builds), which go mod tidy resolves from a file:// proxy built from the
# repository's releases (scripts/withproxy.sh), not from the network.
tidy:
	@GO=$(GO) scripts/withproxy.sh bash -c 'for d in . benchmarks $(dir $(CONTRIB)) $(dir $(EXAMPLES)) scripts/modproxy/; do \
	  echo "tidy $$d"; (cd $$d && $(GO) mod tidy -diff) || exit 1; done'

# A user's module resolves contrib/kafka and the core at the last release
# from the module proxy, with no replace and no go.work, and builds.
modules-test:
	GO=$(GO) scripts/modules-test.sh

# make release VERSION=vX.Y.Z: contrib, benchmarks and examples require the
# core at VERSION; tags VERSION and contrib/NAME/VERSION; ./releases records
# the commit (RELEASE_TAGS=0: no tags).
release:
	@test -n "$(VERSION)" || { echo "usage: make release VERSION=vX.Y.Z" >&2; exit 2; }
	GO=$(GO) scripts/release.sh $(VERSION)

# The benchmarks module's own tests: every adapter over every scenario, small.
benchmarks-test:
	cd benchmarks && $(GO) vet ./... && $(GO) test -race -count=1 -timeout 10m ./...

# The pin offsets are generated from the DWARF of this toolchain: regenerate
# and fail if that changes a committed file.
generated:
	$(GO) generate ./pin/...
	git diff --exit-code -- 'zpinoffsets_*.go' pin_asm.go pin_asm_test.go pin_fallback.go pin_amd64.s pin_arm64.s

staticcheck:
	$(GO) run $(STATICCHECK) ./...
	@for m in $(CONTRIB) $(EXAMPLES) benchmarks/go.mod; do d=$$(dirname $$m); echo "staticcheck $$d"; \
	  (cd $$d && $(GO) run $(STATICCHECK) ./...) || exit 1; done

generate:
	$(GO) generate ./...

bench:
	@GO=$(GO) scripts/tools.sh bench
	scripts/bench.sh bench

pgo:
	scripts/bench.sh pgo

bench-arm64:
	scripts/bench.sh arm64

# 10 minutes of mixed load (SOAK_DURATION to change), then the WAL crash test
# with 100 SIGKILLs (CRASH_KILLS) instead of CI's 20, the whole mode matrix
# (every cell also SIGKILLed, CRASH_KILLS spread over them) and 20,000
# randomized WAL damage cases instead of CI's 1,200.
CRASH_KILLS ?= 100
soak:
	scripts/bench.sh soak
	VINEQUEUE_CRASH_KILLS=$(CRASH_KILLS) $(GO) test -count=1 -run '^TestCrashSIGKILL$$' -v -timeout 30m .
	VINEQUEUE_MATRIX_LONG=1 VINEQUEUE_CRASH_KILLS=$(CRASH_KILLS) $(GO) test -race -count=1 -run '^TestMatrix' -timeout 60m .
	VINEQUEUE_DAMAGE_CASES=20000 $(GO) test -count=1 -run 'Damage' -timeout 30m ./wal/
