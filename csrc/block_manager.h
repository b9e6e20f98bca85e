// KV-cache block allocator for the paged sampler (reversalkit.engine): fixed-size blocks with
// reference counts and chained hashes of full blocks, so that sequences sharing a token prefix
// (the few-shot prefix of every prompt, the n samples of one prompt) share the same KV blocks.
//
// Plain C++17, no Python or torch. reversalkit/engine/block_manager.py holds a Python mirror with
// the same behaviour operation for operation (tests replay random operation sequences on both).
//
// Lifecycle of a block: free (maybe still cached: it keeps its hash so a later prompt can reuse
// its KV) -> referenced by one or more block tables -> free again when its last reference goes.
// Free blocks form one list: blocks without a hash are handed out first, cached ones last and
// oldest-first, so the cache keeps recently used prefixes.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <tuple>
#include <unordered_map>
#include <utility>
#include <vector>

namespace reversalkit {

class BlockManager {
public:
    BlockManager(int64_t num_blocks, int64_t block_size);

    int64_t num_blocks() const { return static_cast<int64_t>(ref_.size()); }
    int64_t block_size() const { return block_size_; }
    int64_t num_free() const { return num_free_; }

    // Block table for a prompt: full blocks found in the cache (same chained hash, same tokens)
    // are shared, the rest are fresh. A block holding the last token is never taken from the cache,
    // so at least one token is always left to compute. Returns (table, number of cached tokens).
    // Throws std::runtime_error when fewer than ceil(len / block_size) blocks are free.
    std::pair<std::vector<int64_t>, int64_t> allocate(const std::vector<int64_t>& token_ids);

    // One fresh block (reference count 1, no hash), taken from the head of the free list.
    int64_t allocate_block();

    // Register the hash of a block whose block_size tokens have been computed. prev_block is the
    // block before it in the same table (-1 for the first); it must already be sealed.
    void seal(int64_t block, int64_t prev_block, const std::vector<int64_t>& tokens);

    // A second table sharing every full block of `table` (num_tokens tokens). A partial last block
    // cannot be shared (both sequences will append to it), so it is replaced by a fresh block and
    // returned as (table, src, dst) for the caller to copy KV src -> dst; src = dst = -1 otherwise.
    std::tuple<std::vector<int64_t>, int64_t, int64_t> fork(const std::vector<int64_t>& table,
                                                            int64_t num_tokens);

    // Drop one reference to every block of the table (last block first).
    void free(const std::vector<int64_t>& table);

    // Forget all cached hashes and mark every block free (used after the weights change).
    void reset();

    int64_t ref_count(int64_t block) const;
    bool has_hash(int64_t block) const;
    uint64_t block_hash(int64_t block) const;  // throws when the block has no hash

    // Chained hash of one full block: FNV-1a over the 64-bit token values, started from the
    // previous block's hash (kHashSeed for the first block), then a splitmix64 finalizer.
    static uint64_t chain_hash(uint64_t prev, const int64_t* tokens, int64_t n);
    static constexpr uint64_t kHashSeed = 0xcbf29ce484222325ULL;

private:
    void check_block(int64_t block, const char* what) const;
    int64_t take_free();            // pop the head of the free list, clearing its cache entry
    void unlink(int64_t block);     // remove a cached free block from the free list
    void push_front(int64_t block);
    void push_back(int64_t block);

    int64_t block_size_;
    int64_t num_free_ = 0;
    std::vector<int64_t> ref_;
    std::vector<uint8_t> hashed_;
    std::vector<uint64_t> hash_;
    std::vector<std::vector<int64_t>> tokens_;  // tokens of sealed blocks, to reject hash collisions
    std::vector<int64_t> prev_, next_;          // intrusive doubly linked free list (-1 = none)
    int64_t head_ = -1, tail_ = -1;
    std::unordered_map<uint64_t, int64_t> cache_;  // hash -> block (the most recently sealed)
};

}  // namespace reversalkit
