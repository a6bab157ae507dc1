# lifeboat — run `make help` for the targets.
GO      ?= go
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -s -w -X main.version=$(VERSION)
BIN     := bin/lifeboat
# The Go modules: the binary's (.), the integration and chart tests', and the
# release tooling's, kept apart so their dependencies stay out of the
# binary's go.mod. make test runs MODULES; e2e (a real cluster, root, its own
# target) is linted with them.
MODULES := . integration charts release
LINT_MODULES := $(MODULES) e2e
# make e2e: where the Kubernetes binaries are built and kept between runs,
# and the image reference the e2e cluster runs.
E2E_BIN   ?= /var/cache/lifeboat-e2e/bin
E2E_IMAGE ?= ghcr.io/lifeboat-dev/lifeboat:e2e
# make release: where the artifacts go, the image's name, helm.
DIST       ?= dist
IMAGE_REPO ?= ghcr.io/lifeboat-dev/lifeboat
HELM       ?= $(or $(shell command -v helm 2>/dev/null),$(shell $(GO) env GOPATH)/bin/helm)
RELEASE_ARCHES := amd64 arm64
# The commit a release is built from, -dirty with uncommitted changes: an
# image label and in the SBOM.
REVISION   ?= $(shell r=$$(git rev-parse HEAD 2>/dev/null) && { git diff --quiet HEAD -- || r=$$r-dirty; } && echo $$r)

# Every target uses each module's own go.mod; go.work (all three modules) is
# for editors and ad-hoc commands. So the binary is built as the Dockerfile
# builds it, and an import that compiles only because another module of the
# workspace requires its module fails here rather than in the image build.
export GOWORK := off

.PHONY: help build run test test-short lint e2e bench fuzz loadtest image-tarball release clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

build: ## build a static bin/lifeboat
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/lifeboat

run: ## run lifeboat serve on 127.0.0.1:5000 with ./lifeboat-data (ARGS="..." for more flags)
	$(GO) run ./cmd/lifeboat serve $(ARGS)

test: ## run every test (unit, integration, chart) with the race detector, module by module; then list the skipped tests and what to install
	@tmp=$$(mktemp -d); trap 'rm -rf $$tmp' EXIT; \
	(cd integration && $(GO) build -o $$tmp/testsummary ./tools/testsummary) || exit 1; \
	fail=0; for m in $(MODULES); do \
		echo "== $$m"; \
		(cd $$m && $(GO) test -json -race -count=1 -timeout 15m ./...; echo $$? > $$tmp/rc) | $$tmp/testsummary -skips $$tmp/skipped; \
		[ "$$(cat $$tmp/rc)" = 0 ] || fail=1; \
	done; \
	$$tmp/testsummary -report $$tmp/skipped; exit $$fail

test-short: ## unit tests only (the main module)
	$(GO) test -race -count=1 ./...

lint: ## gofmt, then go vet and a go.mod tidiness check in every module
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); echo 'gofmt needed'; exit 1; }
	@for m in $(LINT_MODULES); do \
		echo "== $$m"; (cd $$m && $(GO) vet ./... && $(GO) mod tidy -diff) || exit 1; \
	done

e2e: ## the mission on a real Kubernetes, one node then a second joining (root): builds the Kubernetes binaries into E2E_BIN (~20 min once, then cached), the image, and runs e2e/'s scenarios
	nice -n 10 e2e/build-kube.sh $(E2E_BIN)
	$(MAKE) --no-print-directory image-tarball IMAGE=$(E2E_IMAGE)
	cd e2e && LIFEBOAT_E2E_BIN=$(E2E_BIN) LIFEBOAT_E2E_IMAGE=$(CURDIR)/bin/lifeboat-image.tar \
		LIFEBOAT_E2E_IMAGE_REF=$(E2E_IMAGE) HELM=$(HELM) $(GO) test -v -count=1 -timeout 30m .

bench: ## hot-path benchmarks, then the whole-process benchmark (BLOB_MIB=256)
	$(GO) test -run '^$$' -bench . -benchmem ./cache/... ./proxy/... ./registry/...
	cd integration && LIFEBOAT_BENCH_BLOB_MIB=$(or $(BLOB_MIB),256) $(GO) test -run '^$$' -bench 'WholeProcess|Cluster' -benchtime 1x -timeout 30m .

fuzz: ## run every Fuzz target for FUZZTIME each (default 20s; CI's run; the long run: make fuzz FUZZTIME=30m)
	@for dir in $$(grep -l "^func Fuzz" $$(git ls-files '*_test.go') | xargs -r -n1 dirname | sort -u); do \
		for f in $$(grep -ho '^func Fuzz[A-Za-z0-9_]*' $$dir/*_test.go | sed 's/^func //'); do \
			echo "== $$dir $$f"; $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(or $(FUZZTIME),20s) ./$$dir || exit 1; \
		done; \
	done

loadtest: ## the hostile-client attacks against the built binary, a minute each (LIFEBOAT_LOADTEST_DURATION); not in CI
	cd integration && $(GO) test -tags loadtest -run TestLoad -v -count=1 -timeout 30m .

image-tarball: ## build the container image without Docker: bin/lifeboat-image.tar (IMAGE=..., PUSH=ref to push too)
	CGO_ENABLED=0 GOOS=linux $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o bin/lifeboat-linux ./cmd/lifeboat
	$(GO) run ./cmd/mkimage --binary bin/lifeboat-linux --arch $$($(GO) env GOARCH) --version $(VERSION) --tag $(or $(IMAGE),ghcr.io/lifeboat-dev/lifeboat:$(VERSION)) --tarball bin/lifeboat-image.tar $(if $(PUSH),--push $(PUSH))

release: ## VERSION=x.y.z: static binaries, the multi-arch image, the chart pinned to it by digest, an SBOM and SHA256SUMS in DIST (dist/)
	@echo '$(VERSION)' | grep -Eqx '[0-9]+\.[0-9]+\.[0-9]+(-[0-9A-Za-z.-]+)?' || { echo 'usage: make release VERSION=x.y.z (got "$(VERSION)")'; exit 2; }
	@mkdir -p $(DIST) && test -z "$$(ls -A $(DIST))" || { echo '$(DIST) is not empty: remove it (make clean) first'; exit 2; }
	@for a in $(RELEASE_ARCHES); do \
		echo "== lifeboat linux/$$a"; \
		CGO_ENABLED=0 GOOS=linux GOARCH=$$a $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(DIST)/lifeboat-$(VERSION)-linux-$$a ./cmd/lifeboat || exit 1; \
	done
	$(GO) run ./cmd/mkimage $(foreach a,$(RELEASE_ARCHES),--binary $(a)=$(DIST)/lifeboat-$(VERSION)-linux-$(a)) \
		--version $(VERSION) --revision '$(REVISION)' --tag $(IMAGE_REPO):$(VERSION) --oci-archive $(DIST)/lifeboat-$(VERSION)-image.oci.tar
	cd release && $(GO) run . --version $(VERSION) --revision '$(REVISION)' --dist $(abspath $(DIST)) --chart $(CURDIR)/charts/lifeboat --helm $(HELM)

clean: ## remove build output
	rm -rf bin dist
