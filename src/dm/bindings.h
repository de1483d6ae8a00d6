/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Input to the module-local bindgen run (see Kbuild). Only the declarations
 * from the headers allowlisted there are emitted; everything they reference
 * (struct bio, block_device, ...) comes from the kernel crate's bindings.
 */
#include <linux/device-mapper.h>
#include <linux/dm-io.h>
#include <linux/dm-kcopyd.h>
#include <linux/dm-bufio.h>
#include "shim.h"
