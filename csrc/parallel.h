// Row-range parallelism for the host kernels that run between torch ops (decode attention, sampling).
//
// With OpenMP (the extension is built with -fopenmp where the compiler has it) the work runs on the
// process's OpenMP thread pool. torch ships its libgomp under the same soname, so both share one
// runtime and one pool: torch's workers, still spinning after the previous GEMM, pick the rows up at
// once, where threads of our own would compete with them for the cores (measured on 2 cores: the
// decode attention ran ~2.5x slower between GEMMs than alone). Without OpenMP, std::thread.
#pragma once

#include <algorithm>
#include <cstdint>
#include <thread>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif

namespace reversalkit {

// fn(w, b0, b1) over [0, n) split into `threads` contiguous ranges (at least 1); w is the range's
// index in 0..threads-1 (for per-range partial results).
template <class Fn>
void parallel_ranges_indexed(int64_t n, int64_t threads, const Fn& fn) {
    const int64_t T = std::max<int64_t>(1, threads);
    if (T == 1) {
        fn(int64_t{0}, int64_t{0}, n);
        return;
    }
#ifdef _OPENMP
#pragma omp parallel for num_threads(static_cast<int>(T)) schedule(static, 1)
    for (int64_t w = 0; w < T; ++w) fn(w, n * w / T, n * (w + 1) / T);
#else
    std::vector<std::thread> pool;
    for (int64_t w = 1; w < T; ++w) pool.emplace_back([&fn, n, w, T] { fn(w, n * w / T, n * (w + 1) / T); });
    fn(int64_t{0}, int64_t{0}, n / T);
    for (auto& th : pool) th.join();
#endif
}

// fn(b0, b1) over [0, n) split into `threads` contiguous ranges (at least 1).
template <class Fn>
void parallel_ranges(int64_t n, int64_t threads, const Fn& fn) {
    parallel_ranges_indexed(n, threads, [&fn](int64_t, int64_t b0, int64_t b1) { fn(b0, b1); });
}

}  // namespace reversalkit
