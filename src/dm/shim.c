// SPDX-License-Identifier: GPL-2.0
/*
 * C shim for dm-snapshot-rs. See shim.h.
 */
#include <linux/blkdev.h>
#include <linux/module.h>
#include "shim.h"

/*
 * Module parameters, with upstream dm-snapshot's names, defaults and
 * permissions, so /sys/module/<module>/parameters/ looks the same.
 */
static unsigned int snapshot_cow_threshold = 2048;
module_param_named(snapshot_cow_threshold, snapshot_cow_threshold, uint, 0644);
MODULE_PARM_DESC(snapshot_cow_threshold, "Maximum number of chunks being copied on write");

DECLARE_DM_KCOPYD_THROTTLE_WITH_MODULE_PARM(snapshot_copy_throttle,
		"A percentage of time allocated for copy on write");

unsigned int dmsnap_param_cow_threshold(void)
{
	return READ_ONCE(snapshot_cow_threshold);
}

struct dm_kcopyd_throttle *dmsnap_kcopyd_throttle(void)
{
	return &dm_kcopyd_throttle;
}

void dmsnap_bio_set_dev(struct bio *bio, struct block_device *bdev)
{
	bio_set_dev(bio, bdev);
}

void dmsnap_bio_endio(struct bio *bio, blk_status_t status)
{
	bio->bi_status = status;
	bio_endio(bio);
}

blk_mode_t dmsnap_table_mode(struct dm_target *ti)
{
	return dm_table_get_mode(ti->table);
}

sector_t dmsnap_bdev_nr_sectors(struct block_device *bdev)
{
	return bdev_nr_sectors(bdev);
}

unsigned int dmsnap_bdev_logical_block_size(struct block_device *bdev)
{
	return bdev_logical_block_size(bdev);
}
