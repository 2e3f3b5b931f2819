// Streaming kernels for HBM bandwidth, run through CuPy RawModule.
//
// Every access is a 16-byte vector (float4). Each thread keeps UNROLL independent loads in
// flight before it stores anything, and the grid strides over the array, so the card has
// enough bytes in flight to cover HBM latency (Little's law) with a grid of a few waves.
// Loads use the streaming cache hint (__ldcs): data is touched once, do not keep it in L2.
// The grid is one full wave, sized by the launcher from the compiled kernel's registers: triad_v4
// takes 40 (sm_90) to 48 (sm_80), so 6 or 5 blocks of 256 fit an SM, not 8. Capping it at 32 with
// __launch_bounds__(256, 8) spills (76 B per thread), which costs more than the lost occupancy.
//
// What each kernel reads and writes: kernels/traffic.py (STREAM, per float; _v4 moves four).
// (read_v4 also writes one float per thread, gridDim*blockDim*4 bytes, under 0.1% of the stream.)

#ifndef UNROLL
#define UNROLL 4
#endif

extern "C" __global__ void read_v4(const float4* __restrict__ a,  // input, n4 vectors
                                   float* __restrict__ partial,   // one sum per thread (keeps loads live)
                                   long long n4) {                // number of float4 elements
    long long tid = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    long long stride = (long long)gridDim.x * blockDim.x;
    float acc = 0.f;
    long long i = tid;
    for (; i + (UNROLL - 1) * stride < n4; i += UNROLL * stride) {
        float4 v[UNROLL];
#pragma unroll
        for (int u = 0; u < UNROLL; ++u) v[u] = __ldcs(a + i + u * stride);
#pragma unroll
        for (int u = 0; u < UNROLL; ++u) acc += (v[u].x + v[u].y) + (v[u].z + v[u].w);
    }
    for (; i < n4; i += stride) {
        float4 v = __ldcs(a + i);
        acc += (v.x + v.y) + (v.z + v.w);
    }
    partial[tid] = acc;
}

extern "C" __global__ void write_v4(float4* __restrict__ c,  // output, n4 vectors
                                    float s,                 // value written (non-zero: never time zeros)
                                    long long n4) {
    long long stride = (long long)gridDim.x * blockDim.x;
    float4 v = make_float4(s, s, s, s);
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n4; i += stride) __stcs(c + i, v);
}

extern "C" __global__ void copy_v4(const float4* __restrict__ a,  // input
                                   float4* __restrict__ c,        // output
                                   long long n4) {
    long long stride = (long long)gridDim.x * blockDim.x;
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    for (; i + (UNROLL - 1) * stride < n4; i += UNROLL * stride) {
        float4 v[UNROLL];
#pragma unroll
        for (int u = 0; u < UNROLL; ++u) v[u] = __ldcs(a + i + u * stride);
#pragma unroll
        for (int u = 0; u < UNROLL; ++u) __stcs(c + i + u * stride, v[u]);
    }
    for (; i < n4; i += stride) __stcs(c + i, __ldcs(a + i));
}

extern "C" __global__ void triad_v4(const float4* __restrict__ a,  // input
                                    const float4* __restrict__ b,  // input
                                    float4* __restrict__ c,        // output: c = a + s * b
                                    float s,
                                    long long n4) {
    long long stride = (long long)gridDim.x * blockDim.x;
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    for (; i + (UNROLL - 1) * stride < n4; i += UNROLL * stride) {
        float4 x[UNROLL], y[UNROLL];
#pragma unroll
        for (int u = 0; u < UNROLL; ++u) {
            x[u] = __ldcs(a + i + u * stride);
            y[u] = __ldcs(b + i + u * stride);
        }
#pragma unroll
        for (int u = 0; u < UNROLL; ++u)
            __stcs(c + i + u * stride, make_float4(fmaf(s, y[u].x, x[u].x), fmaf(s, y[u].y, x[u].y),
                                                   fmaf(s, y[u].z, x[u].z), fmaf(s, y[u].w, x[u].w)));
    }
    for (; i < n4; i += stride) {
        float4 x = __ldcs(a + i), y = __ldcs(b + i);
        __stcs(c + i, make_float4(fmaf(s, y.x, x.x), fmaf(s, y.y, x.y), fmaf(s, y.z, x.z), fmaf(s, y.w, x.w)));
    }
}
