/* The DLPack C ABI (v0.8, unversioned "dltensor" capsules), declared here instead of
 * vendoring dlpack.h: these structs are a frozen ABI shared by torch, numpy and others. */
#ifndef MX8_DLPACK_ABI_H
#define MX8_DLPACK_ABI_H

#include <stdint.h>

typedef struct {
    int32_t device_type; /* kDLCPU = 1 */
    int32_t device_id;
} DLDevice;

typedef struct {
    uint8_t code; /* kDLUInt = 1 */
    uint8_t bits;
    uint16_t lanes;
} DLDataType;

typedef struct {
    void *data;
    DLDevice device;
    int32_t ndim;
    DLDataType dtype;
    int64_t *shape;
    int64_t *strides; /* NULL = compact row-major */
    uint64_t byte_offset;
} DLTensor;

typedef struct DLManagedTensor {
    DLTensor dl_tensor;
    void *manager_ctx;
    void (*deleter)(struct DLManagedTensor *self);
} DLManagedTensor;

#define MX8_DL_CPU 1
#define MX8_DL_CUDA_HOST 3 /* pinned host memory, as some frameworks label it */
#define MX8_DL_UINT 1
#define MX8_DL_FLOAT 2

#endif
