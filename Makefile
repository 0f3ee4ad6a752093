# dm-switch-rs: build the module, the userland tools, and run the tests.
#   make                 build dm_switch.ko against the cached test kernel (or KDIR=...)
#   make CLIPPY=1        the same, with clippy as the Rust compiler
#   make check           host tests + the in-VM suite on the debug kernel
#   make demo            the end-to-end demo in the VM
#   make bench           benchmarks on the perf kernel
#   make kernel          build (or reuse) the debug test kernel
#   make fmt / fmtcheck  rustfmt the kernel crate and the tools

SHELL := /bin/bash
KDIR ?= $(shell scripts/build-kernel.sh debug 2>/dev/null | tail -n1)
KMAKE = $(MAKE) -C $(KDIR) M=$(CURDIR) LLVM=-19 RUSTC=/usr/bin/rustc \
	RUSTDOC=/usr/bin/rustdoc BINDGEN=/opt/dm-switch/bindgen/bin/bindgen \
	CLIPPY_DRIVER=/usr/bin/clippy-driver PATH=/usr/bin:$(PATH)
# rustfmt follows the crate's `mod` items from its root into every folder.
KERNEL_RS := dm_switch.rs

.PHONY: all modules clean kernel check demo bench soak fmt fmtcheck tools

all: modules

modules:
	@test -n "$(KDIR)" || { echo "no kernel tree: run 'make kernel' or pass KDIR=" >&2; exit 1; }
	$(KMAKE) modules

clean:
	@test -z "$(KDIR)" || $(KMAKE) clean
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
