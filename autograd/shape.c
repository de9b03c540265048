/* Shape helpers of the tensor engine. */
#include <stdio.h>

#include "autograd/internal.h"

size_t qat_shape_numel(int ndim, const int *shape)
{
    size_t n = 1;
    for (int i = 0; i < ndim; i++) n *= (size_t)shape[i];
    return n;
}

const char *qat_shape_str(const qat_tensor *t, char *buf, size_t n)
{
    size_t off = 0;
    off += (size_t)snprintf(buf + off, n - off, "[");
    for (int i = 0; i < t->ndim && off < n; i++)
        off += (size_t)snprintf(buf + off, n - off, i ? ",%d" : "%d", t->shape[i]);
    if (off < n) snprintf(buf + off, n - off, "]");
    return buf;
}
