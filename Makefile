# SPDX-License-Identifier: GPL-2.0
#
# Convenience targets. Kbuild reads ./Kbuild, not this file, so this file is
# only the user's front door:
#   make                 build dm-snapshot-rs.ko against KDIR
#   make install         install it under /lib/modules/<kernel>/extra
#   make test            the whole test suite (same as .ci/run)
#   make demo            the main job: the demo in the VM
#   make paths           build, then print kernel/module paths for other rigs
# KDIR defaults to the project's cached test kernel (scripts/kernel.sh);
# set KDIR=/lib/modules/$(uname -r)/build for the running kernel.

KDIR ?= $(shell scripts/kernel.sh)

all: modules

modules:
	$(MAKE) -C $(KDIR) M=$(CURDIR) modules

clippy:
	$(MAKE) -C $(KDIR) M=$(CURDIR) CLIPPY=1 W=1 modules

install: modules_install

modules_install: modules
	$(MAKE) -C $(KDIR) M=$(CURDIR) modules_install

clean:
	$(MAKE) -C $(KDIR) M=$(CURDIR) clean
	cargo clean

test:
	bash scripts/test.sh

demo:
	bash scripts/demo.sh

paths:
	bash scripts/paths.sh

.PHONY: all modules clippy install modules_install clean test demo paths
