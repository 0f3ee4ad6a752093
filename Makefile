# dm-switch-rs: build the module, the userland tools, and run the tests.
#   make                 build dm_switch.ko against the cached test kernel (or KDIR=...)
#   make CLIPPY=1        the same, with clippy as the Rust compiler
#   make check           host tests + the in-VM suite on the debug kernel
#   make demo            the end-to-end demo in the VM
#   make bench           benchmarks on the perf kernel
#   make kernel          build (or reuse) the debug test kernel
#   make fmt / fmtcheck  rustfmt the kernel crate and the tools

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

.PHONY: all modules clean kernel check demo bench soak fmt fmtcheck tools

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
