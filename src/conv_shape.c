/* Convolution shapes: see conv_shape.h. */
#include "resnet/conv_shape.h"

int conv_out_size(int in, int k, int stride, int pad) { return (in + 2 * pad - k) / stride + 1; }

int conv_direct_takes(ConvShape s) {
    return (s.k == 3 && s.pad == 1 && (s.stride == 1 || s.stride == 2)) ||
           (s.k == 1 && s.pad == 0 && s.stride == 2);
}
