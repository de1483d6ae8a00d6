#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
# check-symbols.sh MODULE.ko MODULE.symvers: see dkms/check-symbols.sh (one
# implementation, shared with the DKMS build).
exec bash "$(dirname "$0")/../../dkms/check-symbols.sh" "$@"
