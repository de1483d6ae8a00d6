/* SPDX-License-Identifier: GPL-2.0 */
/*
 * C shim for dm-snapshot-rs: static inlines and macros that bindgen cannot
 * see, and the module parameters (6.12's module! has no parameter support).
 * Everything here is a one-line wrapper; the logic lives in Rust.
 */
#ifndef DM_SNAPSHOT_RS_SHIM_H
#define DM_SNAPSHOT_RS_SHIM_H

#include <linux/bio.h>
#include <linux/blkdev.h>
#include <linux/blk_types.h>
#include <linux/device-mapper.h>
#include <linux/dm-kcopyd.h>
#include <linux/gfp.h>
#include <linux/workqueue.h>

#ifdef __BINDGEN__
/* Constants built from casts and enums that bindgen cannot fold by itself. */
const gfp_t DMSNAP_GFP_NOIO = GFP_NOIO;
const blk_opf_t DMSNAP_REQ_OP_MASK = REQ_OP_MASK;
const blk_opf_t DMSNAP_REQ_PREFLUSH = REQ_PREFLUSH;
const blk_opf_t DMSNAP_REQ_FUA = REQ_FUA;
const blk_opf_t DMSNAP_REQ_SYNC = REQ_SYNC;
const blk_mode_t DMSNAP_BLK_OPEN_READ = BLK_OPEN_READ;
const blk_mode_t DMSNAP_BLK_OPEN_WRITE = BLK_OPEN_WRITE;
#endif

void dmsnap_bio_set_dev(struct bio *bio, struct block_device *bdev);
blk_mode_t dmsnap_table_mode(struct dm_target *ti);
sector_t dmsnap_bdev_nr_sectors(struct block_device *bdev);
int dmsnap_bdev_flush(struct block_device *bdev);
bool dmsnap_bdev_fua(struct block_device *bdev);
bool dmsnap_test_commit_fold(void);
bool dmsnap_test_merge_pipeline(void);
unsigned int dmsnap_test_merge_commit_delay_ms(void);
unsigned int dmsnap_bdev_logical_block_size(struct block_device *bdev);

void dmsnap_bio_io_error(struct bio *bio);
void dmsnap_bio_endio_ok(struct bio *bio);
unsigned int dmsnap_memalloc_noio_save(void);
void dmsnap_memalloc_noio_restore(unsigned int flags);
struct workqueue_struct *dmsnap_workqueue_create(void);
struct workqueue_struct *dmsnap_merge_workqueue_create(void);
void dmsnap_workqueue_destroy(struct workqueue_struct *wq);

/*
 * A full-chunk snapshot write that does the work of the copy: its
 * completion is routed to a prepared kcopyd callback, and the bio is ended
 * only later, once the exception is committed. Lives in per-bio data.
 */
struct dmsnap_full_write {
	bio_end_io_t *end_io;
	void *private;
	void *job;
};
void dmsnap_full_write_start(struct bio *bio, struct dmsnap_full_write *fw, void *job);
void dmsnap_full_write_finish(struct bio *bio, struct dmsnap_full_write *fw, bool ok);

/*
 * A write to a merging chunk that is back in the origin but not yet
 * committed: written to the COW copy first, then (from a work queue) to the
 * origin, then completed. What the first completion changes is saved and
 * restored as dm-raid1 does with dm_bio_record() to retry a read. Lives in
 * per-bio data.
 */
struct dmsnap_dual_write {
	struct work_struct work;
	struct bio *bio;
	struct workqueue_struct *wq;
	bio_end_io_t *end_io;
	void *private;
	struct block_device *bdev;
	struct bvec_iter iter;
	unsigned long flags;
	blk_opf_t opf;
	int remaining;
};
bool dmsnap_dual_write_ok(struct bio *bio);
void dmsnap_dual_write_start(struct bio *bio, struct dmsnap_dual_write *dw, struct workqueue_struct *wq,
			     struct block_device *first, sector_t first_sector);

unsigned int dmsnap_param_cow_threshold(void);
struct dm_kcopyd_throttle *dmsnap_kcopyd_throttle(void);
unsigned int dmsnap_copy_throttle_pct(void);

void dmsnap_iocount_init(atomic_t *count);
void dmsnap_iocount_get(atomic_t *count);
void dmsnap_iocount_put(atomic_t *count);
void dmsnap_iocount_wait(atomic_t *count);
void dmsnap_counter_wake(atomic_t *count);
void dmsnap_counter_wait_zero(atomic_t *count);

#if IS_ENABLED(CONFIG_KUNIT)
/* KUnit self-tests only: the scratch device named by kunit_scratch_dev. */
struct file *dmsnap_kunit_open_scratch(void);
struct block_device *dmsnap_file_bdev(struct file *file);
void dmsnap_kunit_close_scratch(struct file *file);
void dmsnap_kunit_skip(const char *reason);
struct bio *dmsnap_kunit_bio_alloc(blk_opf_t opf, sector_t sector, unsigned int bytes);
void dmsnap_kunit_bio_free(struct bio *bio);
unsigned int dmsnap_kunit_set_cow_threshold(unsigned int limit);
#endif

#endif
