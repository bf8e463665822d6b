# minirun — see README.md. The two commands a newcomer needs:
#   make demo   build, make a demo image, install into a scratch prefix, run it
#   make test   every test (unit, fuzz seeds, integration through the setuid install)

PREFIX     ?= /usr/local
BINDIR     ?= $(PREFIX)/bin
SYSCONFDIR ?= $(PREFIX)/etc
DESTDIR    ?=
GO         ?= go
VERSION    := $(shell git describe --always --dirty 2>/dev/null || echo devel)
LDFLAGS    := -s -w -X main.sysconfdir=$(SYSCONFDIR) -X main.version=$(VERSION)
DEMO_PREFIX ?= /run/minirun-demo
FUZZTIME   ?= 30s

export CGO_ENABLED = 0

# Debian packages for everything the tests and the demo run (busybox-static,
# not busybox: it is copied into test images that have no libc).
DEB_PKGS := squashfs-tools busybox-static cryptsetup-bin libcap2-bin util-linux passwd qemu-system-x86 strace

.PHONY: all install demo test fuzz deps clean bench FORCE

all: minirun

# The configuration directory is compiled in, so the binary is rebuilt
# whenever SYSCONFDIR (or the version) differs from the last build.
.build/stamp: FORCE
	@mkdir -p .build
	@echo '$(SYSCONFDIR) $(VERSION)' | cmp -s - $@ || echo '$(SYSCONFDIR) $(VERSION)' > $@

minirun: .build/stamp go.mod go.sum $(wildcard *.go)
	$(GO) build -trimpath -buildvcs=false -ldflags '$(LDFLAGS)' -o $@ .

install: minirun
	@[ "$$(id -u)" = 0 ] || { echo "make install: needs root (it installs a setuid-root binary); run it with sudo" >&2; exit 1; }
	install -d -m 0755 $(DESTDIR)$(BINDIR) $(DESTDIR)$(SYSCONFDIR)/minirun
	install -o root -g root -m 4755 minirun $(DESTDIR)$(BINDIR)/minirun
	@for f in minirun.toml capability.toml; do \
	  if [ -e $(DESTDIR)$(SYSCONFDIR)/minirun/$$f ]; then echo "keeping existing $(DESTDIR)$(SYSCONFDIR)/minirun/$$f"; \
	  else install -o root -g root -m 0644 etc/$$f $(DESTDIR)$(SYSCONFDIR)/minirun/$$f; fi; done

# Debian packages the tests and the demo use: installed when missing and we
# are root, otherwise named in one line.
deps:
	@missing=""; for pkg in $(DEB_PKGS); do \
	  dpkg-query -W -f='$${Status}' $$pkg 2>/dev/null | grep -q 'ok installed' || missing="$$missing $$pkg"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then echo "installing:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	  else echo "missing Debian packages, install them as root: apt-get install$$missing" >&2; exit 1; fi; fi

demo: deps
	@[ "$$(id -u)" = 0 ] || { echo "make demo: needs root (it installs minirun setuid-root into $(DEMO_PREFIX)); run: sudo make demo" >&2; exit 1; }
	$(MAKE) --no-print-directory install PREFIX=$(DEMO_PREFIX)
	sh testdata/demo.sh $(DEMO_PREFIX)

test: deps
	$(GO) vet ./...
	$(GO) test -count=1 -timeout 60m ./...

# Each fuzz target for FUZZTIME (one target per go test invocation).
fuzz:
	@for t in $$($(GO) test -list 'Fuzz.*' . | grep ^Fuzz); do \
	  echo "== $$t ($(FUZZTIME))"; $(GO) test -run='^$$' -fuzz="^$$t\$$" -fuzztime=$(FUZZTIME) . || exit 1; done

clean:
	rm -rf minirun .build .tools

# make bench: startup against the floor (testdata/bench/floor), bubblewrap and
# runc, loop-device sharing, size and memory; rewrites docs/benchmarks.md.
# Needs root: it installs minirun setuid-root into BENCH_PREFIX (root-owned,
# not under /tmp) and creates the user mrbench. About 2-3 minutes on 2 cores.
BENCH_PREFIX ?= /run/minirun-bench
BENCH_ROUNDS ?= 100
BENCH_PKGS   := bubblewrap runc strace time

bench: deps
	@[ "$$(id -u)" = 0 ] || { echo "make bench: needs root (it installs minirun setuid-root into $(BENCH_PREFIX)); run: sudo make bench" >&2; exit 1; }
	@missing=""; for pkg in $(BENCH_PKGS); do \
	  dpkg-query -W -f='$${Status}' $$pkg 2>/dev/null | grep -q 'ok installed' || missing="$$missing $$pkg"; done; \
	if [ -n "$$missing" ]; then echo "installing:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; fi
	@mkdir -p .build/bench docs
	$(GO) build -trimpath -buildvcs=false -ldflags '-s -w -X main.sysconfdir=$(BENCH_PREFIX)/etc -X main.version=$(VERSION)' -o .build/bench/minirun .
	$(GO) build -trimpath -buildvcs=false -ldflags '-s -w' -o .build/bench/floor ./testdata/bench/floor
	$(GO) build -trimpath -buildvcs=false -o .build/bench/harness ./testdata/bench/harness
	.build/bench/harness -prefix $(BENCH_PREFIX) -rounds $(BENCH_ROUNDS) -bin .build/bench -version '$(VERSION)' -go $(GO) -out docs/benchmarks.md
