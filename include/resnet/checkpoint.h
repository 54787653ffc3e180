/* HDF5 checkpoints (layout in the design's INTERFACE.md): the model, the optimizer, the training state
 * and history, and the run's settings. checkpoint.c owns the layout, h5io.c under it the HDF5 calls.
 * Writes are atomic: a temporary file in the same folder, flushed, fsync'd, renamed over the old one,
 * then the folder fsync'd. Files are built and parsed in memory, so HDF5 never opens (or locks) a file
 * on disk itself. */
#ifndef RESNET_CHECKPOINT_H
#define RESNET_CHECKPOINT_H

#include "resnet/ema.h"
#include "resnet/resnet.h"
#include "resnet/optim.h"
#include "resnet/settings.h"
#include "resnet/train_state.h"

#define CHECKPOINT_FORMAT "resnet-mpi checkpoint"
/* 2: every dataset checksummed (chunked + Fletcher32, scalars compact), the HDF5 1.10 file format
 * (checksums on all metadata), fixed-length strings. 1 (no checksums) is still read. */
#define CHECKPOINT_FORMAT_VERSION 2

/* Writes path atomically. settings: every setting of the run (/config attributes, numbers typed).
 * 0, or -1 with rn_error (the previous file at path is then untouched). */
int checkpoint_write(const char *path, const Model *m, const Optimizer *opt, const TrainState *ts,
                     const History *h, const Settings *settings);

/* checkpoint_write with the parameters' moving average (--ema) as /ema beside /model: one dataset per
 * parameter under /model's name and shape, and attributes decay and n_averaged; when ema->reference_valid,
 * the average's own reference BN statistics as /ema/reference, laid out as /reference. ema NULL: no /ema. */
int checkpoint_write_ema(const char *path, const Model *m, const Optimizer *opt, const TrainState *ts,
                         const History *h, const Settings *settings, const Ema *ema);

/* Reads /config into settings (before a model can be built). 0 or -1 with rn_error (not a file, not
 * HDF5, not a resnet-mpi checkpoint, wrong format_version). */
int checkpoint_read_settings(const char *path, Settings *settings);

/* Loads /model into m (which must be built with the file's configuration: every name and shape must
 * match, else -1), and where not NULL /optimizer into opt, /train into ts, /history into h. */
int checkpoint_read(const char *path, Model *m, Optimizer *opt, TrainState *ts, History *h);

/* checkpoint_read that also loads /ema into ema (ema_init'ed for m's parameters): its average, decay and
 * n_averaged, and /ema/reference when the file has it (into ema->reference, reserved here when it is not
 * yet; ema->reference_valid says whether it was there); a file without /ema is refused. ema NULL:
 * checkpoint_read. Either way /ema is checked whenever the file has one: it must exist exactly when
 * /config says ema > 0, with /model's parameter names and shapes, finite values, the decay of /config and
 * n_averaged at most /train's step; its reference group is held to /reference's rules (this model's BN
 * modules, their shapes, finite values, no negative variance). */
int checkpoint_read_ema(const char *path, Model *m, Optimizer *opt, TrainState *ts, History *h, Ema *ema);

/* The moving average as the model to evaluate: checkpoint_read_ema, then /ema's parameters in place of
 * m's and /ema/reference in place of its reference statistics (none when the file lacks them: /reference
 * belongs to the raw weights). *n_averaged (unless NULL): the average's updates. 0 or -1 with rn_error. */
int checkpoint_read_average(const char *path, Model *m, long *n_averaged);

/* Reads every dataset and attribute of the file, which makes HDF5 verify every checksum in it. 0, or
 * -1 with rn_error naming the file and the damaged object. *step (unless NULL): /train/step, -1 when the
 * file has none. */
int checkpoint_verify(const char *path, long *step);

/* The same three from a file's bytes in memory (name stands for the file in messages): what the file
 * functions do after reading the file whole, exposed for the fuzzing harnesses. */
int checkpoint_image_read_settings(const char *name, const void *image, size_t size, Settings *settings);
int checkpoint_image_read(const char *name, const void *image, size_t size, Model *m, Optimizer *opt,
                          TrainState *ts, History *h);
int checkpoint_image_read_ema(const char *name, const void *image, size_t size, Model *m, Optimizer *opt,
                              TrainState *ts, History *h, Ema *ema);
int checkpoint_image_verify(const char *name, const void *image, size_t size, long *step);

#endif
