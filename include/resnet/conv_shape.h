/* The shape of a convolution, shared by the convolution layer (conv.h) and the kernels built once per
 * instruction set under it (conv_direct.h): the output extent, which shapes the direct kernels take, and
 * the chunk budget both paths bound their scratch with. */
#ifndef RESNET_CONV_SHAPE_H
#define RESNET_CONV_SHAPE_H

typedef struct { int cin, cout, k, stride, pad; } ConvShape;

/* Floats per chunk of images, for im2col's matrix and the direct kernels' stride-2 input planes alike:
 * large enough for long rows, small enough to stay in L2/L3. */
#define CONV_CHUNK_FLOATS (1u << 20)

int conv_out_size(int in, int k, int stride, int pad);

/* The shapes the direct kernels take: 3x3 / pad 1 at stride 1 or 2, 1x1 / pad 0 at stride 2. */
int conv_direct_takes(ConvShape s);

#endif
