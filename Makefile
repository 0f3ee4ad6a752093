# dm-switch-rs: build the module, the userland tools, and run the tests.
#   make                 build dm_switch.ko against the cached test kernel (or KDIR=...)
#   make CLIPPY=1        the same, with clippy as the Rust compiler
#   make check           host tests + the in-VM suite on the debug kernel
#   make demo            the end-to-end demo in the VM
#   make bench           benchmarks on the perf kernel
#   make kernel          build (or reuse) the debug test kernel
#   make fmt / fmtcheck  rustfmt the kernel crate and the tools
#   make install         module, agent, systemd unit, udev rule, example config
#                        (DESTDIR, PREFIX=/usr/local, KDIR/KVER); make uninstall
#   make dkms-source     the module's sources + dkms.conf under /usr/src (DESTDIR)

SHELL := /bin/bash
# The kernel toolchain arguments and the cached test kernel's directory come
# from scripts/lib.sh, where they are defined once. Computing the directory
# builds nothing: only `make` (modules) builds the test kernel, if missing.
LIB := source scripts/lib.sh 2>/dev/null
TOOLCHAIN := $(shell $(LIB) && echo "$${KMAKE_ARGS[*]}")
TEST_KDIR := $(shell $(LIB) && kernel_build_dir debug 2>/dev/null)
KDIR ?= $(TEST_KDIR)
KMAKE = $(MAKE) -C $(KDIR) M=$(CURDIR) $(TOOLCHAIN) PATH=/usr/bin:$(PATH)
# rustfmt follows the crate's `mod` items from its root into every folder.
KERNEL_RS := dm_switch.rs

.PHONY: all modules clean kernel check demo bench soak fmt fmtcheck tools install uninstall dkms-source

# Installation. The module goes to updates/, which depmod ranks above the
# kernel's own drivers/md/dm-switch.ko (upstream's C target, same name).
PREFIX ?= /usr/local
SBINDIR = $(PREFIX)/sbin
DOCDIR = $(PREFIX)/share/doc/dm-switch
UNITDIR ?= $(PREFIX)/lib/systemd/system
UDEVRULESDIR ?= /etc/udev/rules.d
KVER ?= $(shell cat $(KDIR)/include/config/kernel.release 2>/dev/null)
VERSION := $(shell sed -n 's/^pub(crate) const VERSION: \[u32; 3\] = \[\([0-9]*\), \([0-9]*\), \([0-9]*\)\];$$/\1.\2.\3/p' target.rs)
MODULE_SOURCES := Kbuild dm_switch.rs target.rs control kapi pure include
INSTALLED := $(DESTDIR)/lib/modules/$(KVER)/updates/dm_switch.ko $(DESTDIR)$(SBINDIR)/dm-switch \
	$(DESTDIR)$(UNITDIR)/dm-switch-activate.service $(DESTDIR)$(UDEVRULESDIR)/90-dm-switch.rules \
	$(DESTDIR)/etc/dm-switch/switch.toml.example $(DESTDIR)$(DOCDIR)/README.md
SUBST = sed -e 's|@SBINDIR@|$(SBINDIR)|g' -e 's|@DOCDIR@|$(DOCDIR)|g' -e 's|@VERSION@|$(VERSION)|g'
DEPMOD = depmod $(if $(DESTDIR),-b $(DESTDIR)) $(KVER)

all: modules

modules:
	@if [ "$(KDIR)" = "$(TEST_KDIR)" ] && [ ! -f "$(KDIR)/.dm-switch-complete" ]; then \
	  echo "building the test kernel first (make kernel; ~15 min cold)" >&2; \
	  scripts/build-kernel.sh debug >/dev/null || exit 1; fi
	$(KMAKE) modules

# Never builds a kernel: with no kernel tree at hand, the build products are
# removed by name.
clean:
	@if [ -f "$(KDIR)/Makefile" ]; then $(KMAKE) clean; else \
	  find . -path ./tools -prune -o -path ./tests -prune -o -type f \( -name '*.o' -o -name '*.ko' \
	    -o -name '*.mod' -o -name '*.mod.c' -o -name '.*.cmd' -o -name '*.d' -o -name '*.rmeta' \
	    -o -name Module.symvers -o -name modules.order \) -print0 | xargs -0 rm -f; fi
	rm -f kapi/bindings_generated.rs

kernel:
	scripts/build-kernel.sh debug

tools:
	cd tools && cargo build --release --quiet

install: modules tools
	@[ -n "$(KVER)" ] || { echo "install: no kernel release (set KDIR or KVER)" >&2; exit 1; }
	install -D -m 644 dm_switch.ko $(DESTDIR)/lib/modules/$(KVER)/updates/dm_switch.ko
	install -D -m 755 tools/target/release/dm-switch $(DESTDIR)$(SBINDIR)/dm-switch
	install -d $(DESTDIR)$(UNITDIR) $(DESTDIR)$(UDEVRULESDIR) $(DESTDIR)/etc/dm-switch $(DESTDIR)$(DOCDIR)
	$(SUBST) packaging/dm-switch-activate.service.in > $(DESTDIR)$(UNITDIR)/dm-switch-activate.service
	install -m 644 packaging/90-dm-switch.rules $(DESTDIR)$(UDEVRULESDIR)/90-dm-switch.rules
	install -m 644 packaging/switch.toml.example $(DESTDIR)/etc/dm-switch/switch.toml.example
	install -m 644 tools/agent/README.md $(DESTDIR)$(DOCDIR)/README.md
	$(DEPMOD)

uninstall:
	rm -f $(INSTALLED)
	$(DEPMOD)

dkms-source:
	install -d $(DESTDIR)/usr/src/dm-switch-$(VERSION)
	cp -r $(MODULE_SOURCES) $(DESTDIR)/usr/src/dm-switch-$(VERSION)/
	$(SUBST) packaging/dkms.conf.in > $(DESTDIR)/usr/src/dm-switch-$(VERSION)/dkms.conf

fmt:
	rustfmt --edition 2021 $(KERNEL_RS)
	cd tools && cargo fmt

fmtcheck:
	rustfmt --edition 2021 --check $(KERNEL_RS)
	cd tools && cargo fmt --check

check:
	scripts/check.sh

demo:
	scripts/demo.sh

bench:
	scripts/bench.sh

soak:
	SOAK=1 VM_TIMEOUT=$${VM_TIMEOUT:-14400} scripts/check.sh
