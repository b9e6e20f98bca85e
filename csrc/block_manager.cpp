// KV-cache block allocator (see block_manager.h). Invariant: a block is on the free list exactly
// when its reference count is 0; a block is in cache_ only if it has a hash.
#include "block_manager.h"

#include <algorithm>
#include <string>

namespace reversalkit {

BlockManager::BlockManager(int64_t num_blocks, int64_t block_size) : block_size_(block_size) {
    if (num_blocks <= 0) throw std::invalid_argument("num_blocks must be positive, got " + std::to_string(num_blocks));
    if (block_size <= 0) throw std::invalid_argument("block_size must be positive, got " + std::to_string(block_size));
    ref_.assign(num_blocks, 0);
    hashed_.assign(num_blocks, 0);
    hash_.assign(num_blocks, 0);
    tokens_.assign(num_blocks, {});
    prev_.assign(num_blocks, -1);
    next_.assign(num_blocks, -1);
    reset();
}

void BlockManager::reset() {
    cache_.clear();
    head_ = tail_ = -1;
    num_free_ = 0;
    for (int64_t b = 0; b < num_blocks(); ++b) {
        ref_[b] = 0;
        hashed_[b] = 0;
        tokens_[b].clear();
        push_back(b);
    }
}

uint64_t BlockManager::chain_hash(uint64_t prev, const int64_t* tokens, int64_t n) {
    uint64_t h = prev;
    for (int64_t i = 0; i < n; ++i) {
        h ^= static_cast<uint64_t>(tokens[i]);
        h *= 0x100000001b3ULL;
    }
    h ^= h >> 30;
    h *= 0xbf58476d1ce4e5b9ULL;
    h ^= h >> 27;
    h *= 0x94d049bb133111ebULL;
    h ^= h >> 31;
    return h;
}

void BlockManager::check_block(int64_t block, const char* what) const {
    if (block < 0 || block >= num_blocks())
        throw std::out_of_range(std::string(what) + ": block " + std::to_string(block) + " outside [0, " +
                                std::to_string(num_blocks()) + ")");
}

void BlockManager::push_back(int64_t b) {
    prev_[b] = tail_;
    next_[b] = -1;
    if (tail_ >= 0) next_[tail_] = b; else head_ = b;
    tail_ = b;
    ++num_free_;
}

void BlockManager::push_front(int64_t b) {
    prev_[b] = -1;
    next_[b] = head_;
    if (head_ >= 0) prev_[head_] = b; else tail_ = b;
    head_ = b;
    ++num_free_;
}

void BlockManager::unlink(int64_t b) {
    if (prev_[b] >= 0) next_[prev_[b]] = next_[b]; else head_ = next_[b];
    if (next_[b] >= 0) prev_[next_[b]] = prev_[b]; else tail_ = prev_[b];
    prev_[b] = next_[b] = -1;
    --num_free_;
}

int64_t BlockManager::take_free() {
    if (head_ < 0) throw std::runtime_error("out of KV blocks: every block is in use");
    const int64_t b = head_;
    unlink(b);
    if (hashed_[b]) {
        auto it = cache_.find(hash_[b]);
        if (it != cache_.end() && it->second == b) cache_.erase(it);
        hashed_[b] = 0;
        tokens_[b].clear();
    }
    ref_[b] = 1;
    return b;
}

std::pair<std::vector<int64_t>, int64_t> BlockManager::allocate(const std::vector<int64_t>& token_ids) {
    const int64_t n = static_cast<int64_t>(token_ids.size());
    const int64_t needed = (n + block_size_ - 1) / block_size_;
    if (needed > num_free_)
        throw std::runtime_error("out of KV blocks: a prompt of " + std::to_string(n) + " tokens needs " +
                                 std::to_string(needed) + " blocks, " + std::to_string(num_free_) + " are free");
    std::vector<int64_t> table;
    table.reserve(needed);
    int64_t cached = 0;
    uint64_t h = kHashSeed;
    bool missed = false;
    for (int64_t i = 0; i < needed; ++i) {
        const int64_t start = i * block_size_;
        // Only blocks that end before the last token may come from the cache.
        if (!missed && start + block_size_ <= n - 1) {
            const int64_t* chunk = token_ids.data() + start;
            h = chain_hash(h, chunk, block_size_);
            auto it = cache_.find(h);
            if (it != cache_.end() && std::equal(chunk, chunk + block_size_, tokens_[it->second].begin())) {
                const int64_t b = it->second;
                if (ref_[b] == 0) {
                    unlink(b);
                    ref_[b] = 1;
                } else {
                    ++ref_[b];
                }
                table.push_back(b);
                cached += block_size_;
                continue;
            }
            missed = true;
        }
        table.push_back(take_free());
    }
    return {table, cached};
}

int64_t BlockManager::allocate_block() { return take_free(); }

void BlockManager::seal(int64_t block, int64_t prev_block, const std::vector<int64_t>& tokens) {
    check_block(block, "seal");
    if (static_cast<int64_t>(tokens.size()) != block_size_)
        throw std::invalid_argument("seal: a block holds " + std::to_string(block_size_) + " tokens, got " +
                                    std::to_string(tokens.size()));
    if (ref_[block] == 0) throw std::runtime_error("seal: block " + std::to_string(block) + " is free");
    uint64_t prev = kHashSeed;
    if (prev_block >= 0) {
        check_block(prev_block, "seal");
        if (!hashed_[prev_block])
            throw std::runtime_error("seal: previous block " + std::to_string(prev_block) + " is not sealed");
        prev = hash_[prev_block];
    }
    const uint64_t h = chain_hash(prev, tokens.data(), block_size_);
    if (hashed_[block]) {
        if (hash_[block] == h) return;
        throw std::runtime_error("seal: block " + std::to_string(block) + " is already sealed with other tokens");
    }
    hashed_[block] = 1;
    hash_[block] = h;
    tokens_[block] = tokens;
    cache_[h] = block;
}

std::tuple<std::vector<int64_t>, int64_t, int64_t> BlockManager::fork(const std::vector<int64_t>& table,
                                                                      int64_t num_tokens) {
    const int64_t expected = (num_tokens + block_size_ - 1) / block_size_;
    if (num_tokens <= 0 || static_cast<int64_t>(table.size()) != expected)
        throw std::invalid_argument("fork: a table for " + std::to_string(num_tokens) + " tokens has " +
                                    std::to_string(expected) + " blocks, got " + std::to_string(table.size()));
    const bool partial = num_tokens % block_size_ != 0;
    if (partial && num_free_ == 0) throw std::runtime_error("out of KV blocks: fork needs one free block");
    for (int64_t b : table) {
        check_block(b, "fork");
        if (ref_[b] == 0) throw std::runtime_error("fork: block " + std::to_string(b) + " is free");
    }
    std::vector<int64_t> out(table);
    const size_t shared = partial ? table.size() - 1 : table.size();
    for (size_t i = 0; i < shared; ++i) ++ref_[table[i]];
    if (!partial) return {out, -1, -1};
    const int64_t dst = take_free();
    out.back() = dst;
    return {out, table.back(), dst};
}

void BlockManager::free(const std::vector<int64_t>& table) {
    for (int64_t b : table) {
        check_block(b, "free");
        if (ref_[b] <= 0) throw std::runtime_error("free: block " + std::to_string(b) + " is already free");
    }
    for (auto it = table.rbegin(); it != table.rend(); ++it) {
        const int64_t b = *it;
        if (--ref_[b] == 0) {
            if (hashed_[b]) push_back(b); else push_front(b);
        }
    }
}

int64_t BlockManager::ref_count(int64_t block) const {
    check_block(block, "ref_count");
    return ref_[block];
}

bool BlockManager::has_hash(int64_t block) const {
    check_block(block, "has_hash");
    return hashed_[block] != 0;
}

uint64_t BlockManager::block_hash(int64_t block) const {
    check_block(block, "block_hash");
    if (!hashed_[block]) throw std::runtime_error("block " + std::to_string(block) + " has no hash");
    return hash_[block];
}

}  // namespace reversalkit

// ---- Python bindings (declared and called in bindings.cpp) ----
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

namespace py = pybind11;

void bind_block_manager(py::module_& m) {
    using reversalkit::BlockManager;
    py::class_<BlockManager>(m, "BlockManager",
                             "KV-cache block allocator with reference counts and chained prefix hashes.")
        .def(py::init<int64_t, int64_t>(), py::arg("num_blocks"), py::arg("block_size"))
        .def_property_readonly("num_blocks", &BlockManager::num_blocks)
        .def_property_readonly("block_size", &BlockManager::block_size)
        .def("num_free", &BlockManager::num_free)
        .def("allocate", &BlockManager::allocate, py::arg("token_ids"),
             "Block table for a prompt -> (table, num_cached_tokens); cached full blocks are shared.")
        .def("allocate_block", &BlockManager::allocate_block, "One fresh block (ref 1, no hash).")
        .def("seal", &BlockManager::seal, py::arg("block"), py::arg("prev_block"), py::arg("tokens"),
             "Register the chained hash of a computed full block.")
        .def("fork", &BlockManager::fork, py::arg("table"), py::arg("num_tokens"),
             "Share a table's full blocks -> (new_table, copy_src, copy_dst); -1 when nothing to copy.")
        .def("free", &BlockManager::free, py::arg("table"))
        .def("reset", &BlockManager::reset)
        .def("ref_count", &BlockManager::ref_count, py::arg("block"))
        .def("has_hash", &BlockManager::has_hash, py::arg("block"))
        .def("block_hash", &BlockManager::block_hash, py::arg("block"))
        .def_static("chain_hash", [](uint64_t prev, const std::vector<int64_t>& tokens) {
            return BlockManager::chain_hash(prev, tokens.data(), static_cast<int64_t>(tokens.size()));
        }, py::arg("prev"), py::arg("tokens"));
}
