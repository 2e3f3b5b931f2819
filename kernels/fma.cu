// CUDA-core FP32 throughput: CHAINS independent FMA chains per thread, ITERS steps each, so the
// scheduler always has an independent FMA to issue (4-cycle latency x 4 schedulers per SM).
// CHAINS comes from kernels/traffic.py (FMA_CHAINS), which also counts the FLOPs: 2 per FMA.

#ifndef CHAINS
#error "compile with -DCHAINS=<kernels/traffic.py FMA_CHAINS>"
#endif

extern "C" __global__ void fma_chain_fp32(float* __restrict__ out,  // one result per thread (keeps chains live)
                                          float a,                   // multiplier, |a| < 1 so values stay finite
                                          float b,                   // addend
                                          int iters) {               // FMA steps per chain
    int tid = blockIdx.x * blockDim.x + threadIdx.x;
    float x[CHAINS];
#pragma unroll
    for (int k = 0; k < CHAINS; ++k) x[k] = (float)(tid % 1024) * 1e-3f + (float)k;
    for (int i = 0; i < iters; ++i) {
#pragma unroll
        for (int k = 0; k < CHAINS; ++k) x[k] = fmaf(x[k], a, b);
    }
    float s = 0.f;
#pragma unroll
    for (int k = 0; k < CHAINS; ++k) s += x[k];
    out[tid] = s;
}
