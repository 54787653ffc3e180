/* The in-memory image set: see imageset.h. */
#include "resnet/imageset.h"

#include <stdlib.h>
#include <string.h>

void imageset_free(ImageSet *s) {
    if (!s) return;
    free(s->pixels);
    free(s->labels);
    memset(s, 0, sizeof *s);
}
