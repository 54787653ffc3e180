/* The eval subcommand: a checkpoint scored on the test or validation set. Returns the exit code. */
#ifndef RESNET_EVAL_H
#define RESNET_EVAL_H

#include "resnet/config.h"

int eval_main(Config *cfg);

#endif
