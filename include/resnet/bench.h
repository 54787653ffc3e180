/* The bench subcommand: timed training steps on synthetic data. Returns the exit code. */
#ifndef RESNET_BENCH_H
#define RESNET_BENCH_H

#include "resnet/config.h"

int bench_main(Config *cfg);

#endif
