/* The small layers: ReLU, add, global average pooling, linear, softmax cross-entropy, the paper's
 * option-A shortcut and the layout change at the stem. Activations are C,N,H,W (see conv.h); the
 * classifier works on rows, [n, features]. Backward functions overwrite input gradients and accumulate
 * parameter gradients. */
#ifndef RESNET_LAYERS_H
#define RESNET_LAYERS_H

#include <stddef.h>

/* images [n, c, hw] (as read) -> out [c, n, hw] */
void nchw_to_cnhw(float *out, const float *images, int n, int c, int hw);

void relu_forward(float *y, const float *x, size_t count);              /* y may alias x */
void relu_backward(float *dx, const float *dy, const float *y, size_t count); /* mask from output */

void add_forward(float *y, const float *a, const float *b, size_t count);   /* y = a + b; y may alias */
void add_inplace(float *y, const float *x, size_t count);                   /* y += x */

/* x [c, n, hw] -> y [n, c], the mean over hw */
void avgpool_forward(float *y, const float *x, int c, int n, int hw);
/* dy [n, c] -> dx [c, n, hw] = dy / hw */
void avgpool_backward(float *dx, const float *dy, int c, int n, int hw);

/* x [n, in], weight [out, in], bias [out] -> y [n, out] */
void linear_forward(float *y, const float *x, const float *weight, const float *bias, int n, int in, int out);
/* dx [n, in] overwritten (NULL: skipped); dweight, dbias accumulate */
void linear_backward(float *dx, float *dweight, float *dbias, const float *dy, const float *x,
                     const float *weight, int n, int in, int out);

/* Softmax cross-entropy on logits [n, classes]. Returns the SUM of the n per-sample losses (double) and,
 * when dlogits != NULL, writes dlogits = (softmax - onehot) / denom, so that with denom = the global
 * batch the gradients of all ranks sum to the gradient of the mean loss. */
double softmax_xent(float *dlogits, const float *logits, const int *labels, int n, int classes, double denom);

/* He et al.'s option-A shortcut: x [cin, n, h, w] -> y [cout, n, ceil(h/stride), ceil(w/stride)] taking every
 * stride-th pixel, with (cout - cin) / 2 zero channels before and after the cin copied ones. */
void shortcut_a_forward(float *y, const float *x, int cin, int cout, int n, int h, int w, int stride);
/* dy [cout, n, ho, wo] -> dx [cin, n, h, w] (overwritten) */
void shortcut_a_backward(float *dx, const float *dy, int cin, int cout, int n, int h, int w, int stride);

#endif
