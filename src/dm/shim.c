// SPDX-License-Identifier: GPL-2.0
/*
 * C shim for dm-snapshot-rs. See shim.h.
 */
#include <linux/blkdev.h>
#include <linux/bio-integrity.h>
#include <linux/file.h>
#include <linux/module.h>
#include <linux/sched/mm.h>
#include <linux/wait_bit.h>
#include <linux/slab.h>
#include <linux/version.h>
#include <linux/workqueue.h>
#include <kunit/test.h>
#include <kunit/test-bug.h>
#include "shim.h"

#ifdef DMSNAP_VERSION
MODULE_VERSION(DMSNAP_VERSION);
#endif

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

unsigned int dmsnap_copy_throttle_pct(void)
{
	return READ_ONCE(dm_kcopyd_throttle.throttle);
}

/*
 * A count of requests in flight, dropped from any context (bio completion)
 * and waited for in process context.
 */
void dmsnap_iocount_init(atomic_t *count)
{
	atomic_set(count, 1);
}

void dmsnap_iocount_get(atomic_t *count)
{
	atomic_inc(count);
}

void dmsnap_iocount_put(atomic_t *count)
{
	/* Fully ordered: what the caller stored before is seen by the waiter. */
	int left = atomic_dec_return(count);

	WARN_ON_ONCE(left < 0);
	if (left == 0)
		wake_up_var(count);
}

void dmsnap_iocount_wait(atomic_t *count)
{
	/* Acquire: pairs with the put, so the waiter sees the requests' results. */
	wait_var_event(count, !atomic_read_acquire(count));
}

/*
 * A counter that process context waits to see at zero, decremented from
 * any context (bio completion): the caller has decremented it to zero.
 */
void dmsnap_counter_wake(atomic_t *count)
{
	/* Orders the decrement before the waiter check (see wake_up_var()). */
	smp_mb__after_atomic();
	wake_up_var(count);
}

void dmsnap_counter_wait_zero(atomic_t *count)
{
	wait_var_event(count, !atomic_read_acquire(count));
}

void dmsnap_bio_set_dev(struct bio *bio, struct block_device *bdev)
{
	bio_set_dev(bio, bdev);
}

void dmsnap_bio_io_error(struct bio *bio)
{
	bio_io_error(bio);
}

void dmsnap_bio_endio_ok(struct bio *bio)
{
	bio->bi_status = BLK_STS_OK;
	bio_endio(bio);
}

unsigned int dmsnap_memalloc_noio_save(void)
{
	return memalloc_noio_save();
}

void dmsnap_memalloc_noio_restore(unsigned int flags)
{
	memalloc_noio_restore(flags);
}

/* Since 6.17 a work queue says whether it is per-CPU (the old default). */
#if LINUX_VERSION_CODE >= KERNEL_VERSION(6, 17, 0)
#define DMSNAP_WQ_PERCPU WQ_PERCPU
#else
#define DMSNAP_WQ_PERCPU 0
#endif

/* The module's work queue (upstream: "ksnapd"): commits, invalidation. */
struct workqueue_struct *dmsnap_workqueue_create(void)
{
	return alloc_workqueue("ksnapd_rs", WQ_MEM_RECLAIM | DMSNAP_WQ_PERCPU, 0);
}

/*
 * The merge workers' queue: a merge waits for copies and commits that run
 * on ksnapd_rs, so it must not run there (a rescuer busy with the merge
 * would never run them). Nothing waits on this queue from ksnapd_rs.
 */
struct workqueue_struct *dmsnap_merge_workqueue_create(void)
{
	return alloc_workqueue("ksnapd_rs_merge", WQ_MEM_RECLAIM | WQ_UNBOUND, 0);
}

void dmsnap_workqueue_destroy(struct workqueue_struct *wq)
{
	destroy_workqueue(wq);
}

static void dmsnap_full_write_end_io(struct bio *bio)
{
	struct dmsnap_full_write *fw = bio->bi_private;

	/* Interrupt context is fine: the callback runs in kcopyd's thread. */
	dm_kcopyd_do_callback(fw->job, 0, bio->bi_status ? 1 : 0);
}

void dmsnap_full_write_start(struct bio *bio, struct dmsnap_full_write *fw, void *job)
{
	fw->end_io = bio->bi_end_io;
	fw->private = bio->bi_private;
	fw->job = job;
	bio->bi_end_io = dmsnap_full_write_end_io;
	bio->bi_private = fw;
	submit_bio_noacct(bio);
}

void dmsnap_full_write_finish(struct bio *bio, struct dmsnap_full_write *fw, bool ok)
{
	bio->bi_end_io = fw->end_io;
	bio->bi_private = fw->private;
	if (!ok)
		bio->bi_status = BLK_STS_IOERR;
	bio_endio(bio);
}

static void dmsnap_dual_write_second(struct work_struct *work)
{
	struct dmsnap_dual_write *dw = container_of(work, struct dmsnap_dual_write, work);
	struct bio *bio = dw->bio;

	/*
	 * bio_endio() dropped the bio's blkg: attach it again, as dm-raid1's
	 * read retry does through map_bio() (charged to this worker's cgroup).
	 */
	bio_set_dev(bio, dw->bdev);
	/* dm core accounted the bio when the first write was submitted. */
	submit_bio_noacct(bio);
}

static void dmsnap_dual_write_end_io(struct bio *bio)
{
	struct dmsnap_dual_write *dw = bio->bi_private;

	bio->bi_end_io = dw->end_io;
	bio->bi_private = dw->private;
	if (bio->bi_status) {
		/* The COW copy was not written: fail, the origin is untouched. */
		bio->bi_next = NULL;
		bio_endio(bio);
		return;
	}
	/*
	 * As dm_bio_restore(): the state the bio had before the first write
	 * (the device is set again by the worker). A request merge may have
	 * left bi_next pointing to another bio.
	 */
	bio->bi_next = NULL;
	bio->bi_flags = dw->flags;
	/* The COW's queue may have dropped FUA (no write cache there). */
	bio->bi_opf = dw->opf;
	bio->bi_iter = dw->iter;
	atomic_set(&bio->__bi_remaining, dw->remaining);
	/* Interrupt context: submit from the work queue (it may sleep). */
	INIT_WORK(&dw->work, dmsnap_dual_write_second);
	queue_work(dw->wq, &dw->work);
}

/*
 * Plain data writes only: nothing else is sent twice (a polled bio's
 * cookie would name the COW's queue, not the origin's).
 */
bool dmsnap_dual_write_ok(struct bio *bio)
{
	return bio_op(bio) == REQ_OP_WRITE && bio_has_data(bio) && !bio_integrity(bio) &&
	       !(bio->bi_opf & REQ_POLLED);
}

void dmsnap_dual_write_start(struct bio *bio, struct dmsnap_dual_write *dw, struct workqueue_struct *wq,
			     struct block_device *first, sector_t first_sector)
{
	/* The bio as it should reach the origin: device, sector, flags. */
	dw->bio = bio;
	dw->wq = wq;
	dw->end_io = bio->bi_end_io;
	dw->private = bio->bi_private;
	dw->bdev = bio->bi_bdev;
	dw->flags = bio->bi_flags;
	dw->opf = bio->bi_opf;
	dw->iter = bio->bi_iter;
	dw->remaining = atomic_read(&bio->__bi_remaining);
	bio_set_dev(bio, first);
	bio->bi_iter.bi_sector = first_sector;
	bio->bi_end_io = dmsnap_dual_write_end_io;
	bio->bi_private = dw;
	dm_submit_bio_remap(bio, NULL);
}

blk_mode_t dmsnap_table_mode(struct dm_target *ti)
{
	return dm_table_get_mode(ti->table);
}

sector_t dmsnap_bdev_nr_sectors(struct block_device *bdev)
{
	return bdev_nr_sectors(bdev);
}

int dmsnap_bdev_flush(struct block_device *bdev)
{
	return blkdev_issue_flush(bdev);
}

bool dmsnap_bdev_fua(struct block_device *bdev)
{
	return bdev_fua(bdev);
}

#if IS_ENABLED(CONFIG_KUNIT)
/*
 * Test kernels only: commit as on a COW without native FUA even where the
 * COW has it (dm-log-writes advertises FUA, and the crash replay test must
 * see the folded commits that virtio and most SATA disks get).
 */
static bool test_commit_fold;
module_param(test_commit_fold, bool, 0644);
MODULE_PARM_DESC(test_commit_fold,
		 "KUnit kernels only: commit without FUA as if no COW had it (default: off)");

bool dmsnap_test_commit_fold(void)
{
	return READ_ONCE(test_commit_fold);
}

/*
 * The merge commits a copied batch early (before the next one is copied)
 * while writes wait for the merge or before a pause; this makes it never
 * do so, so that the tests' writes during a merge meet two batches in the
 * window.
 */
static bool test_merge_pipeline;
module_param(test_merge_pipeline, bool, 0644);
MODULE_PARM_DESC(test_merge_pipeline,
		 "KUnit kernels only: never commit a merge batch before the next one is copied (default: off)");

bool dmsnap_test_merge_pipeline(void)
{
	return READ_ONCE(test_merge_pipeline);
}

/*
 * A pause before each merge commit, so that crash tests catch writes to
 * chunks copied back but not committed (written to both copies).
 */
static unsigned int test_merge_commit_delay_ms;
module_param(test_merge_commit_delay_ms, uint, 0644);
MODULE_PARM_DESC(test_merge_commit_delay_ms,
		 "KUnit kernels only: wait this long before each merge commit (default: 0)");

unsigned int dmsnap_test_merge_commit_delay_ms(void)
{
	return min(READ_ONCE(test_merge_commit_delay_ms), 10000U);
}
#else
bool dmsnap_test_commit_fold(void)
{
	return false;
}

bool dmsnap_test_merge_pipeline(void)
{
	return false;
}

unsigned int dmsnap_test_merge_commit_delay_ms(void)
{
	return 0;
}
#endif

unsigned int dmsnap_bdev_logical_block_size(struct block_device *bdev)
{
	return bdev_logical_block_size(bdev);
}

#if IS_ENABLED(CONFIG_KUNIT)
/*
 * A block device the KUnit I/O self-tests may overwrite. Empty (the default)
 * skips them. Only exists in kernels built with CONFIG_KUNIT.
 */
static char *kunit_scratch_dev = "";
static dev_t kunit_scratch_devt;
static int kunit_scratch_err;

/*
 * The path is resolved here, as insmod sets the parameter: the test cases
 * run in kernel threads, whose root (since 7.x) does not see the /dev of
 * the process that loaded the module.
 */
static int kunit_scratch_set(const char *val, const struct kernel_param *kp)
{
	int ret = param_set_charp(val, kp);

	if (ret)
		return ret;
	kunit_scratch_devt = 0;
	kunit_scratch_err = 0;
	if (*kunit_scratch_dev)
		kunit_scratch_err = lookup_bdev(kunit_scratch_dev, &kunit_scratch_devt);
	return 0;
}

static const struct kernel_param_ops kunit_scratch_ops = {
	.set = kunit_scratch_set,
	.get = param_get_charp,
	.free = param_free_charp,
};
module_param_cb(kunit_scratch_dev, &kunit_scratch_ops, &kunit_scratch_dev, 0444);
MODULE_PARM_DESC(kunit_scratch_dev,
		 "KUnit only: block device the I/O self-tests may overwrite (default: none)");

/* Sets snapshot_cow_threshold, returning the old value (KUnit cases restore it). */
unsigned int dmsnap_kunit_set_cow_threshold(unsigned int limit)
{
	return xchg(&snapshot_cow_threshold, limit);
}

struct file *dmsnap_kunit_open_scratch(void)
{
	if (!kunit_scratch_dev || !*kunit_scratch_dev)
		return NULL;
	if (kunit_scratch_err)
		return ERR_PTR(kunit_scratch_err);
	return bdev_file_open_by_dev(kunit_scratch_devt, BLK_OPEN_READ | BLK_OPEN_WRITE,
				     NULL, NULL);
}

struct block_device *dmsnap_file_bdev(struct file *file)
{
	return file_bdev(file);
}

void dmsnap_kunit_close_scratch(struct file *file)
{
	fput(file);
}

void dmsnap_kunit_skip(const char *reason)
{
	struct kunit *test = kunit_get_current_test();

	if (test)
		kunit_mark_skipped(test, "%s", reason);
}

/* A bare bio for testing the Rust bio view; never submitted. */
struct bio *dmsnap_kunit_bio_alloc(blk_opf_t opf, sector_t sector, unsigned int bytes)
{
	struct bio *bio = bio_kmalloc(0, GFP_KERNEL);

	if (!bio)
		return NULL;
	bio_init(bio, NULL, NULL, 0, opf);
	bio->bi_iter.bi_sector = sector;
	bio->bi_iter.bi_size = bytes;
	return bio;
}

void dmsnap_kunit_bio_free(struct bio *bio)
{
	bio_uninit(bio);
	kfree(bio);
}
#endif
