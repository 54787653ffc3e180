/* `resnet_mpi summary`: the model as a table of layers, output shapes and parameters, in the form the
 * seed notebook prints with torchsummary, and the unique parameter count of the parameter table. */
#ifndef RESNET_SUMMARY_H
#define RESNET_SUMMARY_H

#include <stdio.h>
#include "resnet/resnet.h"

/* argv[0] is "summary". Returns the process exit code (0, 1, or 2 for a bad flag). */
int summary_main(int argc, char **argv);

/* Prints the table of a built model. 0, or -1 with rn_error when the layer list does not cover the
 * parameter table exactly (a model whose summary would not add up). */
int summary_print(FILE *out, const Model *m);

#endif
